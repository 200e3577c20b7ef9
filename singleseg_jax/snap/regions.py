"""Self-generated object-like regions of one image, and sloppy outlines of them.

The paper trains on rectangles and circles, which know nothing of the image. The `snap`
variant trains on regions whose borders follow the image's own edges, each paired with
a sloppy outline of it, so the net learns, for this one image, to move an outline onto
the edges a person meant. Everything is jit- and vmap-able and driven by explicit keys.

1. `superpixels`: SLIC-style k-means on (CIE Lab colour, position) over a grid of
   seeds; `num_segments` segments (labels need not be connected).
2. `sample_region`: a union of adjacent superpixels grown from a random seed segment,
   each neighbour joining with a probability that falls with its colour distance to the
   region so far (a random tolerance per region: some regions are colour-coherent
   objects, some are arbitrary unions), until a random target area.
3. `sloppy_outline`: the region grown or shrunk by a random offset (pixels) with a
   smooth random wobble of the boundary: {x : sdf(x) + wobble(x) < offset}, sdf the
   region's exact signed Euclidean distance (`signed_distance`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from singleseg_jax.errors import InputError


class Superpixels(NamedTuple):
  """The superpixels of one image."""
  labels: jax.Array      # (S, S) int32 in [0, K)
  adjacency: jax.Array   # (K, K) bool, symmetric, False on the diagonal
  colour: jax.Array      # (K, 3) mean Lab colour
  area: jax.Array        # (K,) pixels per segment (float32)


class RegionPrior(NamedTuple):
  """Ranges the region and outline samplers draw from (documented defaults, untuned)."""
  min_area: float = 0.04       # target region area, fraction of the image
  max_area: float = 0.6
  min_tolerance: float = 5.0   # colour tolerance (Lab units) of region growth
  max_tolerance: float = 60.0
  grow_steps: int = 24
  min_offset: float = -6.0     # outline offset from the region (pixels; < 0 inside)
  max_offset: float = 10.0
  max_wobble: float = 4.0      # amplitude (pixels) of the smooth boundary wobble
  wobble_grid: int = 6         # the wobble is smooth over this many cells per side
  parts: int = 1               # at most this many colour-coherent parts per region


def rgb_to_lab(rgb):
  """CIE Lab (D65) of sRGB levels 0..255, (..., 3) float32."""
  c = jnp.asarray(rgb, jnp.float32) / 255.0
  lin = jnp.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
  m = jnp.array([[0.4124564, 0.3575761, 0.1804375],
                 [0.2126729, 0.7151522, 0.0721750],
                 [0.0193339, 0.1191920, 0.9503041]], jnp.float32)
  xyz = lin @ m.T / jnp.array([0.95047, 1.0, 1.08883], jnp.float32)
  f = jnp.where(xyz > (6 / 29) ** 3, jnp.cbrt(jnp.maximum(xyz, 1e-12)),
                xyz / (3 * (6 / 29) ** 2) + 4 / 29)
  return jnp.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                    200 * (f[..., 1] - f[..., 2])], axis=-1)


def superpixels(image, num_segments: int = 100, compactness: float = 10.0,
                iterations: int = 10) -> Superpixels:
  """SLIC-style segments of a square (S, S, 3) image of 0..255 levels.

  k-means on (Lab, position * compactness / grid step) from a regular grid of
  round(sqrt(num_segments))^2 centres, each claiming pixels within two grid steps (as
  SLIC), then `connect` keeps each segment on its largest connected piece.
  """
  image = jnp.asarray(image, jnp.float32)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise InputError(f"image must have shape (H, W, 3), got {image.shape}")
  h, w = image.shape[:2]
  g = max(1, int(round(num_segments ** 0.5)))
  step = (h * w / (g * g)) ** 0.5
  lab = rgb_to_lab(image).reshape(-1, 3)
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  pos = jnp.stack([yy, xx], -1).reshape(-1, 2)
  cy = (jnp.arange(g, dtype=jnp.float32) + 0.5) * h / g
  cx = (jnp.arange(g, dtype=jnp.float32) + 0.5) * w / g
  cyx = jnp.stack(jnp.meshgrid(cy, cx, indexing="ij"), -1).reshape(-1, 2)
  idx = (jnp.floor(cyx[:, 0]) * w + jnp.floor(cyx[:, 1])).astype(jnp.int32)
  centres = (lab[idx], pos[idx])
  k = idx.shape[0]
  weight = (compactness / step) ** 2

  def assign(c):
    c_lab, c_pos = c
    d_lab = (jnp.sum(lab ** 2, 1)[:, None] - 2 * lab @ c_lab.T + jnp.sum(c_lab ** 2, 1)[None])
    off = jnp.abs(pos[:, None, :] - c_pos[None])
    d = d_lab + weight * jnp.sum(off ** 2, -1)
    # SLIC's window: a centre claims pixels within 2 grid steps only (fewer fragments).
    return jnp.argmin(jnp.where(jnp.max(off, -1) <= 2 * step, d, jnp.inf), axis=1)

  def body(c, _):
    lab_ = assign(c)
    onehot = jax.nn.one_hot(lab_, k, dtype=jnp.float32)
    count = jnp.maximum(onehot.sum(0), 1)[:, None]
    new = (onehot.T @ lab / count, onehot.T @ pos / count)
    keep = onehot.sum(0)[:, None] > 0
    return tuple(jnp.where(keep, n, o) for n, o in zip(new, c)), None

  centres, _ = jax.lax.scan(body, centres, None, length=iterations)
  labels = connect(assign(centres).astype(jnp.int32).reshape(h, w)).reshape(-1)
  onehot = jax.nn.one_hot(labels, k, dtype=jnp.float32)
  area = onehot.sum(0)
  colour = (onehot.T @ lab) / jnp.maximum(area, 1)[:, None]
  labels = labels.reshape(h, w)
  adj = jnp.zeros((k, k), bool)
  for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
    adj = adj.at[a.ravel(), b.ravel()].max(a.ravel() != b.ravel())
  adj = adj | adj.T
  return Superpixels(labels, adj, colour, area)


def _shifts(x, fill):
  """x's 4 neighbours (up, down, left, right) of an (H, W) map, `fill` off the edge."""
  p = jnp.pad(x, 1, constant_values=fill)
  return (p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:])


def connect(labels, sweeps: int = 64):
  """Each label kept on its largest 4-connected piece; the pixels of smaller pieces
  take a neighbouring label (SLIC's connectivity step, as fixed-size array sweeps)."""
  h, w = labels.shape
  big = h * w
  comp = jnp.arange(big, dtype=jnp.int32).reshape(h, w)

  def merge(comp, _):
    for n_lab, n_comp in zip(_shifts(labels, -1), _shifts(comp, big)):
      comp = jnp.where(n_lab == labels, jnp.minimum(comp, n_comp), comp)
    return comp, None

  comp, _ = jax.lax.scan(merge, comp, None, length=sweeps)
  size = jax.ops.segment_sum(jnp.ones(big, jnp.int32), comp.ravel(), big)
  largest = jax.ops.segment_max(size[comp.ravel()], labels.ravel(), big)
  main = (size[comp] == largest[labels]).reshape(h, w)

  def adopt(carry, _):
    lab, ok = carry
    for n_lab, n_ok in zip(_shifts(lab, -1), _shifts(ok, False)):
      take = ~ok & n_ok
      lab, ok = jnp.where(take, n_lab, lab), ok | take
    return (lab, ok), None

  (labels, _), _ = jax.lax.scan(adopt, (labels, main), None, length=sweeps)
  return labels


def sample_region(key: jax.Array, sp: Superpixels, prior: RegionPrior = RegionPrior()):
  """One object-like region: (S, S) bool, a union of adjacent superpixels.

  A part grows from a seed over neighbours of similar colour (its own mean and
  tolerance). With `prior.parts` > 1 a region has a uniform 1..parts of them, each
  later part seeded next to the region so far and taking its share of the target area:
  real objects are often parts of unlike colours (a pot and its soil, a helmet on a
  face) that one colour model splits.
  """
  present = sp.area > 0
  total = jnp.sum(sp.area)
  empty = jnp.zeros(sp.area.shape, jnp.float32)
  if prior.parts == 1:
    k_seed, k_area, k_tol, k_grow = jax.random.split(key, 4)
    target = jax.random.uniform(k_area, (), minval=prior.min_area, maxval=prior.max_area)
    union = _grow_part(k_seed, k_tol, k_grow, sp, present, empty, target * total, prior)
    return fill_holes(union, sp)[sp.labels] > 0
  k_parts, k_count, k_area = jax.random.split(key, 3)
  target = jax.random.uniform(k_area, (), minval=prior.min_area, maxval=prior.max_area)
  count = jax.random.randint(k_count, (), 1, prior.parts + 1)
  adj = sp.adjacency.astype(jnp.float32)
  union = empty
  for p, k in enumerate(jax.random.split(k_parts, prior.parts)):
    where = present if p == 0 else (adj @ union > 0) & (union == 0) & present
    part = _grow_part(*jax.random.split(k, 3), sp, where, union,
                      target * total * (p + 1) / count, prior)
    union = jnp.where((p < count) & jnp.any(where), jnp.maximum(union, part), union)
  return fill_holes(union, sp)[sp.labels] > 0


def _grow_part(k_seed, k_tol, k_grow, sp: Superpixels, where, union, cap, prior: RegionPrior):
  """A part (K,) 0/1 seeded in `where` (by area), grown outside `union` over colour-alike
  neighbours while it and `union` are under `cap` pixels (the last step may pass it)."""
  present = sp.area > 0
  seed = jax.random.categorical(k_seed, jnp.where(where, jnp.log(jnp.maximum(sp.area, 1)),
                                                  -jnp.inf))
  tol = jnp.exp(jax.random.uniform(k_tol, (), minval=jnp.log(prior.min_tolerance),
                                   maxval=jnp.log(prior.max_tolerance)))
  adj = sp.adjacency.astype(jnp.float32)

  def grow(region, key):
    w = sp.area * region
    mean = (w @ sp.colour) / jnp.maximum(w.sum(), 1)
    dist = jnp.linalg.norm(sp.colour - mean, axis=-1)
    frontier = (adj @ region > 0) & (region == 0) & (union == 0) & present
    join = jax.random.uniform(key, region.shape) < jnp.exp(-dist / tol)
    small = (sp.area @ jnp.maximum(region, union)) < cap
    return jnp.where(frontier & join & small, 1.0, region), None

  region = jax.nn.one_hot(seed, sp.area.shape[0], dtype=jnp.float32)
  region, _ = jax.lax.scan(grow, region, jax.random.split(k_grow, prior.grow_steps))
  return region


def fill_holes(region, sp: Superpixels):
  """The region (K,) 0/1 over superpixels with every hole filled: a superpixel outside
  it joins unless a chain of outside superpixels links it to the image border."""
  k = sp.area.shape[0]
  border = jnp.zeros((k,), bool)
  for edge in (sp.labels[0], sp.labels[-1], sp.labels[:, 0], sp.labels[:, -1]):
    border = border.at[edge].set(True)
  outside = (region == 0) & (sp.area > 0)
  adj = sp.adjacency.astype(jnp.float32)

  def spread(reach, _):
    return reach | ((adj @ reach.astype(jnp.float32) > 0) & outside), None

  reach, _ = jax.lax.scan(spread, border & outside, None, length=k)
  return jnp.where(outside & ~reach, 1.0, region)


def _row_distance(m):
  """Distance along each row to the nearest True pixel of that row (inf if none)."""
  w = m.shape[-1]
  idx = jnp.arange(w, dtype=jnp.float32)
  left = jax.lax.cummax(jnp.where(m, idx, -jnp.inf), axis=m.ndim - 1)
  right = jax.lax.cummin(jnp.where(m, idx, jnp.inf), axis=m.ndim - 1, reverse=True)
  return jnp.minimum(idx - left, right - idx)


def distance_to(mask, max_distance: int = 32):
  """Exact Euclidean distance (pixels) from each pixel of an (..., H, W) mask to its
  nearest True pixel, clipped at `max_distance` (also where there is none).

  In jax.numpy, not `geometry.distance_transform` (scipy): training pairs are made
  inside jit and vmap on the device.

  Two separable passes (Saito-Toriwaki): the exact distance along each row by running
  max/min of indices, then the minimum of g(y') + (y - y')^2 over |y - y'| <=
  max_distance, which is exact wherever the true distance is at most that.
  """
  m = jnp.asarray(mask, bool)
  h = m.shape[-2]
  cap = float(max_distance) ** 2
  g = jnp.minimum(_row_distance(m) ** 2, cap)
  b = int(min(max_distance, h - 1))
  pad = [(0, 0)] * (m.ndim - 2) + [(b, b), (0, 0)]
  gp = jnp.pad(g, pad, constant_values=cap)
  d2 = g
  for k in range(-b, b + 1):
    if k:
      d2 = jnp.minimum(d2, jax.lax.slice_in_dim(gp, b + k, b + k + h, axis=m.ndim - 2) + k * k)
  return jnp.sqrt(jnp.minimum(d2, cap))


def signed_distance(mask, max_distance: float = 16.0):
  """Signed Euclidean distance (pixels, < 0 inside) of (..., S, S) bool masks.

  A pixel outside gets its distance to the region minus 1/2, a pixel inside minus its
  distance to the outside plus 1/2 (so both border layers sit at +-1/2 and
  `sdf < d` grows the region by d pixels, or shrinks it for d < 0). Distances are
  measured inside the image only; values are clipped to +-`max_distance`.
  """
  m = jnp.asarray(mask, bool)
  cap = int(math.ceil(max_distance)) + 1
  sdf = jnp.where(m, 0.5 - distance_to(~m, cap), distance_to(m, cap) - 0.5)
  return jnp.clip(sdf, -max_distance, max_distance)


def sloppy_outline(key: jax.Array, region, prior: RegionPrior = RegionPrior()):
  """A sloppy outline of `region` ((S, S) bool): offset, wobbled, never empty."""
  k_off, k_amp, k_field = jax.random.split(key, 3)
  offset = jax.random.uniform(k_off, (), minval=prior.min_offset, maxval=prior.max_offset)
  amp = jax.random.uniform(k_amp, (), minval=0.0, maxval=prior.max_wobble)
  field = jax.random.normal(k_field, (prior.wobble_grid, prior.wobble_grid))
  field = jax.image.resize(field, region.shape, "cubic")
  field = field / jnp.maximum(jnp.std(field), 1e-6)
  bound = max(abs(prior.min_offset), abs(prior.max_offset)) + 3 * prior.max_wobble + 1
  sdf = signed_distance(region, bound)
  outline = sdf + amp * field < offset
  return jnp.where(outline.any(), outline, region)
