"""The method's variants behind one interface, and the registry that names them.

A variant says how to make a fresh net, the epochs that fit it to one image, how it
answers an outline, what its validation figure shows and how to describe its
schedule. `fit`, `segment`, the run directory, the evaluation, the cut-outs and the
page call these methods; nothing else compares variant names.

- `paper`: the seed's Upsampler on thumbnails of random rectangles and discs, built
  for the config's `size` and `scale` (`paper.model.layer_table`).
- `encdec`: the paper's pairs, loss and input path, with an encoder of the
  full-resolution image and the outline in front of the paper's Upsampler
  (`singleseg_jax.encdec`).
- `snap`: the superpixel graph net of `singleseg_jax.snap` (size 100 only), fitted on
  sloppy outlines of regions made from the image's own superpixels. Its "epoch" is `snap_steps`
  updates on fresh batches; `num_samples - n_train` fixed pairs are its validation set.

The key schedule, shared by every variant: `fold_in(key, 0)` initialises the model,
`fold_in(key, 1)` makes the fixed pair set, epoch `e` shuffles (snap: draws its
batches) with `fold_in(fold_in(key, 2), e)`, and, with `fresh_data`, the paper variant
draws new training pairs from `fold_in(fold_in(key, 3), e)`. So a run restarted at
epoch `e` from its saved state continues exactly as the uninterrupted one.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from singleseg_jax.encdec import EncDecNet, check_blocks
from singleseg_jax.errors import InputError
from singleseg_jax.paper import data as paper_data
from singleseg_jax.paper import predict as paper_predict
from singleseg_jax.paper.layers import uses_custom_vjp, uses_winograd
from singleseg_jax.paper.model import DTYPES, Upsampler, layer_sides, layer_table
from singleseg_jax.snap import net as snap_net
from singleseg_jax.snap import regions
from singleseg_jax.train import (TrainState, apply_model, epoch_update, evaluate_loss,
                                 make_optimizer, num_batches)


class Segmentation(NamedTuple):
  """A variant's answer to one or more outlines."""
  output: np.ndarray         # (..., S, S, 3) float32 in [0, 1]: the net's image
  mask: np.ndarray           # (..., S, S) bool: derived foreground
  input_thumbnail: np.ndarray  # (..., s, s, 3) uint8: what the net was shown
  outline_small: np.ndarray  # (..., s, s) bool: the outline as the net sees it
  probability: Optional[np.ndarray] = None  # (..., S, S) float32, for nets that answer one


def model_key(key: jax.Array) -> jax.Array:
  """The key that initialises a run's model."""
  return jax.random.fold_in(key, 0)


def data_key(key: jax.Array) -> jax.Array:
  """The key of a run's fixed pair set."""
  return jax.random.fold_in(key, 1)


def shuffle_key(key: jax.Array, epoch: int) -> jax.Array:
  """The key that shuffles (or draws the batches of) epoch `epoch`."""
  return jax.random.fold_in(jax.random.fold_in(key, 2), epoch)


def fresh_key(key: jax.Array, epoch: int) -> jax.Array:
  """The key of epoch `epoch`'s fresh training pairs (`fresh_data`)."""
  return jax.random.fold_in(jax.random.fold_in(key, 3), epoch)


class EpochFunctions(NamedTuple):
  """How a variant fits: its data (device arrays, passed to both functions as an
  argument, so a jitted loop over epochs takes them as inputs rather than baking them
  into the program), one epoch and the validation. Both functions are traceable: the
  epoch may be a traced integer."""
  data: object
  run_epoch: Callable  # (state, data, epoch) -> (state, train metrics)
  run_val: Callable    # (state, data) -> val metrics


class Variant:
  """The interface; see the module docstring."""
  name: str
  #: the metric logged beside the loss (`train_<metric>`, `val_<metric>`).
  metric: str
  #: whether the full-resolution GrabCut hybrid may refine this variant's answers.
  refinable: bool
  #: whether epochs batch a fixed training set (so batch_size must fit in it).
  fixed_train_set: bool
  #: whether its steps take their gradient in `microbatch` chunks (so it must divide
  #: batch_size).
  chunks_gradient: bool
  model_type: type

  def check_size(self, size: int, scale: float) -> None:
    """InputError unless this variant has a net for `size` images and `scale`."""
    raise NotImplementedError

  def init(self, key: jax.Array, options) -> TrainState:
    """A fresh model and optimiser for `options`."""
    raise NotImplementedError

  def epochs(self, key: jax.Array, image: np.ndarray, options) -> EpochFunctions:
    """The jitted epoch and validation of a fit to `image` ((S, S, 3) uint8)."""
    raise NotImplementedError

  def predict(self, graphdef, params, image: np.ndarray, outlines: np.ndarray,
              key: jax.Array) -> Segmentation:
    """The answers to (N, S, S) bool outlines on `image`."""
    raise NotImplementedError

  def val_columns(self, key: jax.Array, image: np.ndarray, options, state: TrainState,
                  num: int) -> list:
    """Columns of val_grid.png (each a list of images, top to bottom)."""
    raise NotImplementedError

  def describe(self, options) -> str:
    """One line that says how the net is built and fitted."""
    raise NotImplementedError


class Paper(Variant):
  """The seed's method."""
  name, metric, refinable, model_type = "paper", "mse", False, Upsampler
  fixed_train_set = chunks_gradient = True

  def check_size(self, size, scale):
    layer_table(size, scale)

  def init(self, key, options):
    model = self.net(options, nnx.Rngs(params=model_key(key)))
    return TrainState.create(model, make_optimizer(options.learning_rate, options.l2))

  def net(self, options, rngs: nnx.Rngs) -> nnx.Module:
    """A fresh net for `options`."""
    return Upsampler(options.in_channels, options.width, size=options.size,
                     scale=options.scale, dtype=DTYPES[options.dtype],
                     fast_grad=uses_custom_vjp(options.layer),
                     winograd=uses_winograd(options.layer), rngs=rngs)

  def fixed_data(self, key, image, options) -> tuple[paper_data.Dataset, paper_data.Dataset]:
    """The seed's fixed pair set (train, val) for `image`."""
    if image.shape[:2] != (options.size, options.size):
      raise InputError(f"the net is built for {options.size}x{options.size} images, got "
                       f"{image.shape[1]}x{image.shape[0]}")
    train, val = paper_data.make_dataset(data_key(key), image, options.num_samples,
                                         options.in_channels, options.train_fraction,
                                         options.scale)
    num_batches(len(train), options.batch_size)  # validates batch_size early
    return train, val

  @functools.lru_cache(maxsize=16)
  def epoch_functions(self, options) -> tuple[Callable, Callable]:
    """(run_epoch, run_val) for `options`, the same objects for equal options, so a
    jitted loop over them compiles once for every fit of one shape."""
    microbatch = options.resolved_microbatch()

    def run_epoch(ts, data, epoch):
      pairs = data["train"]
      if options.fresh_data:
        pairs = paper_data.make_pairs(fresh_key(data["key"], epoch), data["image"],
                                      pairs.inputs.shape[0], options.in_channels,
                                      options.scale)
      return epoch_update(ts, pairs, shuffle_key(data["key"], epoch),
                          batch_size=options.batch_size, image=data["image"],
                          microbatch=microbatch)

    def run_val(ts, data):
      return evaluate_loss(ts, data["val"], batch_size=options.batch_size,
                           image=data["image"])

    return run_epoch, run_val

  def epochs(self, key, image, options):
    train, val = self.fixed_data(key, image, options)
    data = {"train": train, "val": val, "image": jnp.asarray(image, jnp.float32), "key": key}
    return EpochFunctions(data, *self.epoch_functions(options))

  def predict(self, graphdef, params, image, outlines, key):
    return Segmentation(**paper_predict.predict(graphdef, params, image, outlines, key))

  def val_columns(self, key, image, options, state, num):
    _, val = self.fixed_data(key, image, options)
    n = min(num, len(val))
    preds = np.asarray(apply_model(state.model(), val.inputs[:n],
                                   jnp.asarray(image, jnp.float32)))
    return [[p, t] for p, t in zip(preds, np.asarray(val.targets[:n]))]

  def describe(self, options):
    sides = layer_sides(options.size, options.scale)
    return (f"paper: {sides[0]}x{sides[0]} -> {sides[-1]}x{sides[-1]} in {len(sides) - 1} "
            f"layers, in_channels {options.in_channels}, width {options.width}, "
            f"{options.num_samples} pairs, batch {options.batch_size}")


class EncDec(Paper):
  """The paper's method with an encoder of the image and the outline before its net."""
  name, model_type = "encdec", EncDecNet

  def net(self, options, rngs):
    return EncDecNet(options.in_channels, options.width, options.encdec_hidden,
                     options.encdec_layers, size=options.size, scale=options.scale,
                     dtype=DTYPES[options.dtype], fast_grad=uses_custom_vjp(options.layer),
                     winograd=uses_winograd(options.layer), rngs=rngs)

  def check_size(self, size, scale):
    super().check_size(size, scale)
    check_blocks(size, scale)

  def describe(self, options):
    return (f"encdec: encoder hidden {options.encdec_hidden}, {options.encdec_layers} code "
            f"layers, before {super().describe(options)}")


class Snap(Variant):
  """The superpixel graph net."""
  name, metric, refinable, model_type = "snap", "error", True, snap_net.SnapNet
  fixed_train_set = chunks_gradient = False

  def check_size(self, size, scale):
    # Its priors (outline offsets, wobble, superpixel count) are pixels of the
    # 100x100 frame; it answers at full resolution, so a larger frame buys it little.
    if size != 100:
      raise InputError(f"the snap variant works at size 100 only, got size {size!r}")

  def init(self, key, options):
    model = snap_net.SnapNet(options.snap_hidden, options.snap_rounds, options.snap_segments,
                             edge_offset=options.snap_edge_offset,
                             rngs=nnx.Rngs(params=model_key(key)))
    return TrainState.create(model, make_optimizer(options.learning_rate, options.l2))

  @staticmethod
  def prior(options) -> regions.RegionPrior:
    """The training regions' prior: the documented defaults, `snap_parts` from options."""
    return regions.RegionPrior(parts=options.snap_parts)

  def fixed_data(self, key, image, options) -> tuple[snap_net.Graph, snap_net.Batch]:
    """The superpixel graph of `image` and its fixed validation pairs."""
    graph = snap_net.graph_of(image, options.snap_segments)
    n_val = options.num_samples - paper_data.num_train(options.num_samples,
                                                        options.train_fraction)
    if n_val < 1:
      raise InputError(f"train_fraction {options.train_fraction} leaves no val pairs")
    val = jax.jit(snap_net.sample_batch, static_argnums=(2, 3, 4))(
        data_key(key), graph, n_val, self.prior(options), options.snap_edge_offset)
    return graph, val

  @functools.lru_cache(maxsize=16)
  def epoch_functions(self, options) -> tuple[Callable, Callable]:
    """(run_epoch, run_val) for `options`, the same objects for equal options."""
    prior = self.prior(options)

    def run_epoch(ts, data, epoch):
      return snap_net.region_epoch(ts, data["graph"], shuffle_key(data["key"], epoch),
                                   steps=options.snap_steps, batch_size=options.batch_size,
                                   prior=prior)

    def run_val(ts, data):
      return snap_net.region_scores(ts, data["graph"], data["val"])

    return run_epoch, run_val

  def epochs(self, key, image, options):
    graph, val = self.fixed_data(key, image, options)
    return EpochFunctions({"graph": graph, "val": val, "key": key},
                          *self.epoch_functions(options))

  def predict(self, graphdef, params, image, outlines, key):
    del key  # the graph net has no input noise
    model = nnx.merge(graphdef, params)
    graph = snap_net.graph_of(image, model.num_segments)
    prob = np.asarray(_snap_probability(graphdef, params, graph, jnp.asarray(outlines)))
    output = (image[None] / 255.0 * prob[..., None]).astype(np.float32)
    inside = (image[None] * outlines[..., None]).astype(np.uint8)
    return Segmentation(output, prob > 0.5, inside, outlines.copy(), prob.astype(np.float32))

  def val_columns(self, key, image, options, state, num):
    _, val = self.fixed_data(key, image, options)
    n = min(num, val.outlines.shape[0])
    outlines, region = np.asarray(val.outlines[:n]), np.asarray(val.regions[:n])
    prob = self.predict(state.graphdef, state.params, image, outlines, key).probability
    img = image / 255.0
    return [[np.where(o[..., None], img, img / 3), img * p[..., None], img * r[..., None]]
            for o, p, r in zip(outlines, prob, region)]

  def describe(self, options):
    return (f"snap: {options.snap_segments} superpixels, hidden {options.snap_hidden}, "
            f"{options.snap_rounds} rounds, {options.snap_steps} updates of batch "
            f"{options.batch_size} per epoch, {options.num_samples} pairs"
            + (f", regions of up to {options.snap_parts} parts"
               if options.snap_parts > 1 else "")
            + (", outline offset from edges" if options.snap_edge_offset else ""))


@jax.jit
def _snap_probability(graphdef, params, graph, outlines):
  return snap_net.probability(nnx.merge(graphdef, params), graph, outlines)


REGISTRY: dict[str, Variant] = {v.name: v for v in (Paper(), EncDec(), Snap())}
#: The variant of a config that names none (runs made before variants existed).
DEFAULT = Paper.name


def get(name: str) -> Variant:
  """The registered variant called `name`; InputError naming the choices otherwise."""
  if name not in REGISTRY:
    raise InputError(f"variant must be one of {tuple(REGISTRY)}, got {name!r}")
  return REGISTRY[name]


def for_model(graphdef, params) -> Variant:
  """The variant whose net `graphdef`/`params` hold."""
  model = nnx.merge(graphdef, params)
  for v in REGISTRY.values():
    if isinstance(model, v.model_type):
      return v
  raise InputError(f"no variant fits a model of type {type(model).__name__}")
