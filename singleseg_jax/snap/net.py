"""The snap variant's net: fitted to one image, it moves a sloppy outline onto edges.

Beyond the paper, same rule: nothing is learnt outside the one image. The
image is cut into superpixels (`regions.superpixels`); the net is a small graph
network over them, fitted on pairs made from the image itself: an object-like region
(a union of adjacent superpixels, `regions.sample_region`) and a sloppy outline of it
(`regions.sloppy_outline`). It learns, for this image, which superpixels a person
meant to include given an outline, and answers with a mask whose borders are the
image's own edges. The paper's thumbnail bottleneck (10x10) is gone: the outline acts
at full 100x100 resolution.

Per superpixel the net sees (`node_features`): the share of it inside the outline;
the mean, min and max signed distance to the outline (/16 px); its Lab colour and
position; and how alike its colour is to the colours inside the outline and to those
just outside it (Gaussian colour kernels of two widths) — a colour model like
GrabCut's, but learnt. `rounds` rounds of message passing mix each superpixel with
its neighbours and with the pooled inside/outside summaries. Output: one logit per
superpixel, painted back onto its pixels. The loss is binary cross-entropy weighted by
superpixel area (so it counts pixels).

With `edge_offset` (`config.snap_edge_offset`), the net also sees an estimate, from
the image, of how far off the outline was drawn (`edge_offset_features`): of the
outline moved by t = EDGE_OFFSETS px, the one whose border runs along the strongest
colour edges between superpixels. Without it, the net cannot tell an outline on the
object's edge from one a few pixels outside and hedges between them.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from singleseg_jax.errors import InputError
from singleseg_jax.snap import regions
from singleseg_jax.train import gradient_step

SDF_SCALE = 16.0
COLOUR_WIDTHS = (8.0, 20.0)   # Lab units
NEAR_OUTSIDE = 0.75           # "just outside": mean signed distance < 0.75 * SDF_SCALE
NUM_FEATURES = 4 + 3 * len(COLOUR_WIDTHS) + 3 + 2
#: The outline offsets (px, > 0: drawn outside the object) `edge_offset_features` tries:
#: the training outlines' range (`regions.RegionPrior`, -6..10) and 2 px beyond.
EDGE_OFFSETS = tuple(float(t) for t in range(-8, 13))  # consecutive integers (one bin each)
EDGE_OFFSET_FEATURES = 3


def num_features(edge_offset: bool = False) -> int:
  """Features per superpixel that `node_features` gives."""
  return NUM_FEATURES + EDGE_OFFSET_FEATURES * bool(edge_offset)


class Graph(NamedTuple):
  """The superpixel graph of one image (computed once per image)."""
  labels: jax.Array     # (S, S) int32
  onehot: jax.Array     # (S*S, K) float32 pixel -> superpixel
  area: jax.Array       # (K,) float32
  colour: jax.Array     # (K, 3) Lab
  position: jax.Array   # (K, 2) centroid / S
  neighbours: jax.Array  # (K, K) float32, rows sum to 1 (0 for a lone superpixel)
  colour_kernels: jax.Array  # (len(COLOUR_WIDTHS), K, K)


def make_graph(image, num_segments: int = 100) -> Graph:
  """The superpixel graph of a square (S, S, 3) image of 0..255 levels."""
  sp = regions.superpixels(image, num_segments)
  s = sp.labels.shape[0]
  k = sp.area.shape[0]
  onehot = jax.nn.one_hot(sp.labels.reshape(-1), k, dtype=jnp.float32)
  yy, xx = jnp.meshgrid(jnp.arange(s, dtype=jnp.float32), jnp.arange(s, dtype=jnp.float32),
                        indexing="ij")
  area = jnp.maximum(sp.area, 1.0)
  position = (onehot.T @ jnp.stack([yy.ravel(), xx.ravel()], -1)) / area[:, None] / s
  adj = sp.adjacency.astype(jnp.float32)
  neighbours = adj / jnp.maximum(adj.sum(1, keepdims=True), 1.0)
  d2 = jnp.sum((sp.colour[:, None] - sp.colour[None]) ** 2, -1)
  kernels = jnp.stack([jnp.exp(-d2 / (2 * w * w)) for w in COLOUR_WIDTHS])
  return Graph(sp.labels, onehot, sp.area, sp.colour, position, neighbours, kernels)


@functools.lru_cache(maxsize=4)
def _cached_graph(image_bytes: bytes, side: int, num_segments: int) -> Graph:
  image = np.frombuffer(image_bytes, np.uint8).reshape(side, side, 3)
  return jax.jit(make_graph, static_argnums=1)(jnp.asarray(image, jnp.float32), num_segments)


def graph_of(image: np.ndarray, num_segments: int) -> Graph:
  """`make_graph` of a square uint8 image, jitted and cached per image (fit and segment
  ask for the same image's graph again and again)."""
  image = np.ascontiguousarray(image, np.uint8)
  return _cached_graph(image.tobytes(), image.shape[0], num_segments)


class Nodes(NamedTuple):
  """Per-superpixel inputs of the graph net for one outline."""
  features: jax.Array   # (K, num_features(edge_offset))
  inside: jax.Array     # (K,) pixels of each superpixel inside the outline
  near: jax.Array       # (K,) pixels just outside the outline


def superpixel_edges(graph: Graph):
  """(S, S): the Lab distance between a pixel's superpixel and its 4-neighbours' (the
  largest), 0 inside a superpixel: the image's edges as the superpixels draw them."""
  lab = graph.colour[graph.labels]
  dy = jnp.linalg.norm(lab[1:] - lab[:-1], axis=-1)
  dx = jnp.linalg.norm(lab[:, 1:] - lab[:, :-1], axis=-1)
  e = jnp.zeros(graph.labels.shape, jnp.float32)
  return e.at[1:].max(dy).at[:-1].max(dy).at[:, 1:].max(dx).at[:, :-1].max(dx)


#: How far the signed distance is measured for `edge_offset_features`: the outline
#: moved by the largest offset must still see SDF_SCALE px of distance on each side.
EDGE_SDF_CAP = SDF_SCALE + max(abs(t) for t in EDGE_OFFSETS)


def edge_offset_estimate(graph: Graph, sdf):
  """(t*, scores): of the outline moved inward by t in EDGE_OFFSETS (to sdf < -t; `sdf`
  (S, S) the outline's signed distance in px, < 0 inside), the t whose border runs along
  the strongest `superpixel_edges`, and every t's mean edge strength along it.

  The border of a moved outline is the two pixel layers either side of its level set,
  -t-1 <= sdf < -t+1: `superpixel_edges` marks both pixels of every edge, so a one-layer
  border would score the layer just outside an object's edge as high as the one just
  inside it, and the argmax would take the first. On a flat image every score is 0 and
  t* is 0 (ties go to the smallest |t|)."""
  # Each pixel lies in one layer, -t-1 <= sdf < -t for t = ceil(-sdf) - 1: sums per layer
  # in one pass per outline, not one per offset (the other way cost ten seconds a fit).
  first, n = int(EDGE_OFFSETS[0]) - 1, len(EDGE_OFFSETS) + 1   # one layer below the first
  which = (jnp.ceil(-sdf) - 1 - first).reshape(-1)
  which = jnp.where((which >= 0) & (which < n), which, n).astype(jnp.int32)
  edges = superpixel_edges(graph).reshape(-1)
  total = jax.ops.segment_sum(edges, which, n + 1)[:n]
  count = jax.ops.segment_sum(jnp.ones_like(edges), which, n + 1)[:n]
  # Offset t's border is layers t and t - 1.
  score = (total[1:] + total[:-1]) / jnp.maximum(count[1:] + count[:-1], 1)
  offsets = jnp.asarray(EDGE_OFFSETS, jnp.float32)
  t = offsets[jnp.argmax(score - 1e-6 * jnp.abs(offsets))]
  return t, score


def edge_offset_features(graph: Graph, sdf):
  """(K, EDGE_OFFSET_FEATURES) from the outline's signed distance `sdf` (S, S, px,
  measured to EDGE_SDF_CAP): with t* from `edge_offset_estimate`, each superpixel's
  share inside the outline moved by t*, its mean signed distance to that (/SDF_SCALE px,
  clipped to +-1), and the estimate's confidence (peak over mean score, less 1, /4).

  A hard argmax: the offsets are inputs, not learnt, and the net learns from this
  image's own training outlines how far to trust it."""
  t, score = edge_offset_estimate(graph, sdf)
  area = jnp.maximum(graph.area, 1.0)
  flat = sdf.reshape(-1)
  moved = jnp.stack([(flat < -t).astype(jnp.float32), (flat + t) / SDF_SCALE]) @ graph.onehot
  cover, shifted = moved[0] / area, jnp.clip(moved[1] / area, -1.0, 1.0)
  confidence = (score.max() / (score.mean() + 1e-3) - 1) / 4
  return jnp.stack([cover, shifted, jnp.broadcast_to(confidence, cover.shape)], -1)


def node_features(graph: Graph, outline, edge_offset: bool = False) -> Nodes:
  """What the net sees of one (S, S) bool outline, per superpixel (`edge_offset`: with
  `edge_offset_features` last)."""
  # One distance transform for both (clipping the wider one gives the narrower exactly).
  sdf_px = regions.signed_distance(outline, EDGE_SDF_CAP if edge_offset else SDF_SCALE)
  sdf = jnp.clip(sdf_px, -SDF_SCALE, SDF_SCALE).reshape(-1) / SDF_SCALE
  o = jnp.asarray(outline, jnp.float32).reshape(-1)
  area = jnp.maximum(graph.area, 1.0)
  cover = (o @ graph.onehot) / area
  k = graph.area.shape[0]
  labels = graph.labels.reshape(-1)
  sdf_mean = (sdf @ graph.onehot) / area
  sdf_min = jnp.maximum(jax.ops.segment_min(sdf, labels, k, indices_are_sorted=False), -1.0)
  sdf_max = jnp.minimum(jax.ops.segment_max(sdf, labels, k, indices_are_sorted=False), 1.0)
  inside = cover * graph.area
  near = (1 - cover) * graph.area * (sdf_mean < NEAR_OUTSIDE)
  feats = [cover, sdf_mean, sdf_min, sdf_max]
  for kernel in graph.colour_kernels:
    a_in = kernel @ inside / jnp.maximum(inside.sum(), 1.0)
    a_out = kernel @ near / jnp.maximum(near.sum(), 1.0)
    feats += [a_in, a_out, a_in / (a_in + a_out + 1e-3)]
  parts = [jnp.stack(feats, -1), graph.colour / 100.0, graph.position]
  if edge_offset:
    parts.append(edge_offset_features(graph, sdf_px))
  return Nodes(jnp.concatenate(parts, -1), inside, near)


def _pooled(weights, h):
  return jnp.broadcast_to((weights @ h) / jnp.maximum(weights.sum(), 1.0), h.shape)


class SnapNet(nnx.Module):
  """Graph net: node features -> one logit per superpixel."""

  def __init__(self, hidden: int = 64, rounds: int = 3, num_segments: int = 100, *,
               edge_offset: bool = False, rngs: nnx.Rngs):
    if not isinstance(hidden, int) or hidden < 1:
      raise InputError(f"snap hidden must be a positive integer, got {hidden!r}")
    if not isinstance(rounds, int) or rounds < 0:
      raise InputError(f"snap rounds must be an integer >= 0, got {rounds!r}")
    self.hidden, self.rounds = hidden, rounds
    self.num_segments = num_segments  # of the graph it was fitted on (`make_graph`)
    self.edge_offset = bool(edge_offset)  # which features it takes (`node_features`)
    self.embed = nnx.Linear(num_features(edge_offset), hidden, rngs=rngs)
    self.mix = nnx.List([nnx.Linear(4 * hidden, hidden, rngs=rngs) for _ in range(rounds)])
    self.update = nnx.List([nnx.Linear(hidden, hidden, rngs=rngs) for _ in range(rounds)])
    self.head = nnx.Linear(hidden, 1, rngs=rngs)

  def __call__(self, graph: Graph, nodes: Nodes):
    h = jax.nn.relu(self.embed(nodes.features))
    for mix, update in zip(self.mix, self.update):
      z = jnp.concatenate([h, graph.neighbours @ h, _pooled(nodes.inside, h),
                           _pooled(nodes.near, h)], -1)
      h = h + update(jax.nn.relu(mix(z)))
    return self.head(h)[..., 0]


class Batch(NamedTuple):
  """Training pairs of the snap variant: sloppy outlines and the regions they meant."""
  nodes: Nodes          # batched (B, K, ...)
  member: jax.Array     # (B, K) float32: 1 where the superpixel is in the region
  regions: jax.Array    # (B, S, S) bool
  outlines: jax.Array   # (B, S, S) bool


def sample_batch(key: jax.Array, graph: Graph, size: int,
                 prior: regions.RegionPrior = regions.RegionPrior(),
                 edge_offset: bool = False) -> Batch:
  """`size` (sloppy outline, region) pairs drawn from the image's own superpixels, with
  the node features of a net with `edge_offset`."""
  sp = regions.Superpixels(graph.labels, graph.neighbours > 0, graph.colour, graph.area)

  def one(k):
    k_region, k_outline = jax.random.split(k)
    region = regions.sample_region(k_region, sp, prior)
    outline = regions.sloppy_outline(k_outline, region, prior)
    member = (region.reshape(-1).astype(jnp.float32) @ graph.onehot) > 0
    return (node_features(graph, outline, edge_offset), member.astype(jnp.float32), region,
            outline)

  nodes, member, region, outline = jax.vmap(one)(jax.random.split(key, size))
  return Batch(nodes, member, region, outline)


def logits(model: SnapNet, graph: Graph, nodes: Nodes):
  """(B, K) logits for batched nodes."""
  return jax.vmap(lambda n: model(graph, n))(nodes)


def loss_and_error(model: SnapNet, graph: Graph, batch: Batch):
  """Area-weighted binary cross-entropy, and the share of pixels labelled wrong."""
  z = logits(model, graph, batch.nodes)
  w = graph.area / graph.area.sum()
  bce = optax.sigmoid_binary_cross_entropy(z, batch.member)
  err = ((z > 0) != (batch.member > 0)).astype(jnp.float32)
  return jnp.mean(bce @ w), jnp.mean(err @ w)


def probability(model: SnapNet, graph: Graph, outlines):
  """(..., S, S) foreground probability for (..., S, S) bool outlines."""
  outlines = jnp.asarray(outlines, bool)
  flat = outlines.reshape((-1,) + outlines.shape[-2:])
  nodes = jax.vmap(lambda o: node_features(graph, o, model.edge_offset))(flat)
  p = jax.nn.sigmoid(logits(model, graph, nodes))
  return p[:, graph.labels].reshape(outlines.shape)


@functools.partial(jax.jit, static_argnames=("steps", "batch_size", "pool", "prior"),
                   donate_argnums=0)
def region_epoch(state, graph: Graph, key: jax.Array, *, steps: int, batch_size: int,
                pool: int = 4, prior: regions.RegionPrior = regions.RegionPrior()):
  """`steps` updates on batches drawn from a fresh pool of `pool * batch_size` pairs.

  Making pairs costs more than an update, so each epoch draws one pool (from
  `fold_in(key, 0)`) and every update a random batch of it (`fold_in(key, i + 1)`).
  Returns the new state and the mean metrics.
  """
  data = sample_batch(jax.random.fold_in(key, 0), graph, pool * batch_size, prior,
                      state.model().edge_offset)  # the features the net was built for

  def body(state, i):
    idx = jax.random.choice(jax.random.fold_in(key, i + 1), pool * batch_size,
                            (batch_size,), replace=False)
    batch = jax.tree.map(lambda a: a[idx], data)
    return gradient_step(state, lambda model: _loss_and_metrics(model, graph, batch))

  state, m = jax.lax.scan(body, state, jnp.arange(steps))
  return state, jax.tree.map(jnp.mean, m)


def _loss_and_metrics(model, graph: Graph, batch: Batch):
  loss, error = loss_and_error(model, graph, batch)
  return loss, {"error": error}


@jax.jit
def region_scores(state, graph: Graph, batch: Batch) -> dict:
  """Mean loss and pixel error of the net on fixed (outline, region) pairs."""
  loss, error = loss_and_error(state.model(), graph, batch)
  return {"loss": loss, "error": error}
