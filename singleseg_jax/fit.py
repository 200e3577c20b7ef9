"""Fitting nets to one image: options, the epoch loop with its convergence rule, and
populations of nets trained together.

Every variant (`singleseg_jax.variants`) is fitted by the same loop; the variant gives
the fresh state and the epoch and validation functions. Keys follow the variants'
key schedule, so a fit resumed from its saved state at epoch `e` continues exactly as
the uninterrupted one.

The loop stays on the device for `epochs_per_sync` epochs at a time: one jitted scan
runs the epochs and keeps a copy of the state with the lowest val loss (`jnp.where`),
and only then does the host read the block's metrics. The host replays the plateau
rule and the finite check on them (`Plateau`); when the rule stops inside a block, or a
loss stops being finite, the block's first epochs are run again up to that point,
which the key schedule makes exact. So every `epochs_per_sync` gives the same
parameters and the same stopping epoch; larger blocks sync, log and checkpoint less
often.

A population (`fit_population`) is P nets on the paper's pairs (the `paper` and
`encdec` variants) of one shape (seeds, or images of one size) under one set of
options: spread over a 1-D mesh axis `nets` of all devices
(`jax.shard_map`) and vmapped within each, with every net's pairs made on its own
device from its own key, and no traffic between devices. It runs `epochs_per_sync`
epochs between host syncs too: each net applies the plateau rule on the device
(`Plateau.device_update`, float32 like the host's) and stops moving where it
converges, so nothing is rerun; the result is each net's `fit()`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from singleseg_jax import variants
from singleseg_jax.encdec import check_encoder
from singleseg_jax.errors import InputError
from singleseg_jax.paper.data import num_train
from singleseg_jax.paper.layers import check_layer
from singleseg_jax.paper.model import DTYPES, layer_widths
from singleseg_jax.train import (Plateau, PlateauState, TrainState, make_optimizer, num_batches,
                                 check_microbatch, net_microbatch)


@dataclasses.dataclass(frozen=True)
class FitOptions:
  """The knobs of one fit; defaults are the seed's cat/dog run."""
  size: int = 100            # the image's (and the net's output's) side
  scale: float = 0.1         # thumbnail side = ceil(size * scale): the net's input
  in_channels: int = 256
  width: float = 1.0
  num_samples: int = 1000
  train_fraction: float = 0.75
  batch_size: int = 50
  microbatch: int = 0        # samples per gradient chunk; 0: auto (train.resolve_microbatch)
  num_epochs: int = 500
  learning_rate: float = 1e-3
  l2: float = 1e-4
  patience: int = 25
  rel_tol: float = 1e-3
  fresh_data: bool = False
  dtype: str = "float32"
  layer: str = "auto"        # how the paper net's layers are differentiated (LAYER_CHOICES)
  variant: str = variants.DEFAULT
  snap_segments: int = 100   # superpixels per image
  snap_hidden: int = 64      # graph net width
  snap_rounds: int = 3       # message-passing rounds
  snap_steps: int = 25       # updates per epoch (each on a fresh batch of batch_size)
  snap_parts: int = 1        # at most this many colour-coherent parts per training region
  snap_edge_offset: bool = False  # the outline's offset estimated from the image's edges
  encdec_hidden: int = 16    # the encoder's channels
  encdec_layers: int = 2     # 3x3 convs on the encoder's code (the last one to in_channels)
  epochs_per_sync: int = 1   # epochs run on the device between two host syncs

  def __post_init__(self):
    variants.get(self.variant)  # validates the name
    for name in ("snap_segments", "snap_hidden", "snap_steps", "snap_parts"):
      v = getattr(self, name)
      if not isinstance(v, int) or v < 1:
        raise InputError(f"{name} must be a positive integer, got {v!r}")
    check_encoder(self.encdec_hidden, self.encdec_layers)
    if not isinstance(self.epochs_per_sync, int) or self.epochs_per_sync < 1:
      raise InputError(f"epochs_per_sync must be a positive integer, got "
                       f"{self.epochs_per_sync!r}")
    if not isinstance(self.snap_edge_offset, bool):
      raise InputError(f"snap_edge_offset must be True or False, got {self.snap_edge_offset!r}")
    if not isinstance(self.snap_rounds, int) or self.snap_rounds < 0:
      raise InputError(f"snap_rounds must be an integer >= 0, got {self.snap_rounds!r}")
    check_layer(self.layer)
    if self.dtype not in DTYPES:
      raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
    if not isinstance(self.num_epochs, int) or self.num_epochs < 1:
      raise InputError(f"num_epochs must be a positive integer, got {self.num_epochs!r}")
    if not isinstance(self.in_channels, int) or self.in_channels < 1:
      raise InputError(f"in_channels must be a positive integer, got {self.in_channels!r}")
    self.variant_impl.check_size(self.size, self.scale)
    layer_widths(self.width)  # validates width
    if not isinstance(self.num_samples, int) or self.num_samples < 2:
      raise InputError(f"num_samples must be an integer >= 2, got {self.num_samples!r}")
    if not (isinstance(self.train_fraction, (int, float)) and 0 < self.train_fraction < 1):
      raise InputError(f"train_fraction must be in (0, 1), got {self.train_fraction!r}")
    n_train = num_train(self.num_samples, self.train_fraction)
    if not 1 <= n_train < self.num_samples:
      raise InputError(f"train_fraction {self.train_fraction} leaves no train or val samples")
    # Variants that batch a fixed training set need a batch that fits in it.
    num_batches(n_train if self.variant_impl.fixed_train_set else self.batch_size,
                self.batch_size)
    check_microbatch(self.microbatch,
                     self.batch_size if self.variant_impl.chunks_gradient else None)
    make_optimizer(self.learning_rate, self.l2)  # validates both
    Plateau(self.patience, self.rel_tol)  # validates both

  def resolved_microbatch(self, platform: str | None = None) -> int:
    """Samples per gradient chunk of this fit's steps on `platform` (default JAX's):
    `microbatch`, or auto's choice for the paper's net (`train.net_microbatch`); the
    whole batch for a variant that does not chunk (snap)."""
    if not self.variant_impl.chunks_gradient:
      return self.batch_size
    return net_microbatch(self.microbatch, self.batch_size, self.in_channels, self.width,
                          self.size, self.scale, platform)

  @property
  def variant_impl(self) -> variants.Variant:
    """The variant these options fit."""
    return variants.get(self.variant)


class FitState(NamedTuple):
  """What a checkpoint must hold to continue a fit."""
  train: TrainState
  plateau: PlateauState
  epoch: int  # epochs completed


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


def init_state(key: jax.Array, options: FitOptions) -> TrainState:
  """A fresh model and optimiser for `options`."""
  return options.variant_impl.init(key, options)


def epoch_record(epoch: int, train_metrics: dict, val_metrics: dict) -> dict:
  """The log line of one finished epoch: {epoch, train_*, val_*}, all floats.

  Raises TrainingDiverged when a value is not finite.
  """
  record = {"epoch": epoch, **{f"train_{k}": float(x) for k, x in train_metrics.items()},
            **{f"val_{k}": float(x) for k, x in val_metrics.items()}}
  if not all(math.isfinite(x) for x in record.values()):
    raise TrainingDiverged(f"loss is not finite at epoch {epoch}: {record}")
  return record


def converged_reason(options: FitOptions) -> str:
  """Why a fit stopped when the plateau rule fired."""
  return (f"converged: val loss did not improve by {options.rel_tol:g} (relative) "
          f"for {options.patience} epochs")


@functools.lru_cache(maxsize=16)
def _block(run_epoch, run_val, size: int):
  """The jitted run of `count` <= `size` epochs from `start` (both traced, so one
  program serves every block of a fit, the shorter reruns included), carrying the
  state, the state with the lowest val loss so far and that loss; returns them and
  the per-epoch (train, val) metrics in buffers of `size` rows."""

  @jax.jit
  def block(ts, best_ts, best_loss, data, start, count):
    def one_epoch(ts):
      ts, m = run_epoch(ts, data, start)
      return m, run_val(ts, data)

    buffers = jax.tree.map(lambda a: jnp.zeros((size,) + a.shape, a.dtype),
                           jax.eval_shape(one_epoch, ts))

    def body(i, carry):
      ts, best_ts, best_loss, (mbuf, vbuf) = carry
      ts, m = run_epoch(ts, data, start + i)
      v = run_val(ts, data)
      better = v["loss"] < best_loss  # the plateau rule's best: strictly lower
      best_ts = jax.tree.map(lambda b, n: jnp.where(better, n, b), best_ts, ts)
      mbuf = jax.tree.map(lambda buf, x: buf.at[i].set(x), mbuf, m)
      vbuf = jax.tree.map(lambda buf, x: buf.at[i].set(x), vbuf, v)
      return ts, best_ts, jnp.where(better, v["loss"], best_loss), (mbuf, vbuf)

    ts, best_ts, best_loss, metrics = jax.lax.fori_loop(
        0, count, body, (ts, best_ts, best_loss, buffers))
    return (ts, best_ts, best_loss), metrics

  return block


def fit(key: jax.Array, image, options: FitOptions, *, resume: Optional[FitState] = None,
        on_epoch: Optional[Callable[[dict], None]] = None,
        on_sync: Optional[Callable[[FitState, Optional[FitState]], None]] = None
        ) -> tuple[FitState, str]:
  """Trains until convergence or `num_epochs`; returns the final state and why it stopped.

  `on_epoch(record)` runs for every epoch (for logging); the record holds the epoch's
  mean train and val metrics (`train_loss`, `val_loss`, and `train_<m>`/`val_<m>` for
  the variant's metric: the paper's MSE, snap's share of pixels labelled wrong).
  `on_sync(state, best)` runs after every block of `epochs_per_sync` epochs (for
  checkpoints): `state` is the fit so far, `best` the state of the block's new lowest
  val loss, or None when the block did not improve on it.
  Raises `TrainingDiverged` if the training loss stops being finite; `on_sync` has
  then been given the last good state.
  """
  fns = options.variant_impl.epochs(key, image, options)
  rule = Plateau(options.patience, options.rel_tol)
  state = resume or FitState(init_state(key, options), rule.init(), 0)
  if rule.converged(state.plateau):
    return state, converged_reason(options)
  block = _block(fns.run_epoch, fns.run_val, options.epochs_per_sync)

  def run_block(ts, start, epochs):
    args = (jnp.asarray(state.plateau.best, jnp.float32), jnp.asarray(start, jnp.int32),
            jnp.asarray(epochs, jnp.int32))
    with jax.transfer_guard("disallow"):  # no host round trip inside the block
      return block(ts, ts, args[0], fns.data, args[1], args[2])

  while state.epoch < options.num_epochs:
    epochs = min(options.epochs_per_sync, options.num_epochs - state.epoch)
    (ts, best_ts, _), (m, v) = run_block(state.train, state.epoch, epochs)
    m, v = jax.device_get((m, v))
    plateau, records, best_plateau, stop, diverged = state.plateau, [], None, None, None
    for i in range(epochs):
      try:
        record = epoch_record(state.epoch + i + 1, {k: x[i] for k, x in m.items()},
                              {k: x[i] for k, x in v.items()})
      except TrainingDiverged as e:
        stop, diverged = i, e
        break
      plateau, converged = rule.update(plateau, record["val_loss"])
      records.append(record)
      if plateau.best_epoch == plateau.epoch:
        best_plateau = plateau
      if converged:
        stop = i + 1
        break
    if stop is not None and stop < epochs:  # run the block again up to where it stopped
      if stop == 0:
        ts = best_ts = state.train
      else:
        (ts, best_ts, _), _ = run_block(state.train, state.epoch, stop)
    if on_epoch is not None:
      for record in records:
        on_epoch(record)
    state = FitState(ts, plateau, state.epoch + len(records))
    if on_sync is not None:
      best = None if best_plateau is None else FitState(best_ts, best_plateau,
                                                        best_plateau.epoch + 1)
      on_sync(state, best)
    if diverged is not None:
      raise diverged
    if stop is not None:
      return state, converged_reason(options)
  return state, f"reached num_epochs={options.num_epochs}"


#: The mesh axis a population's nets are spread over.
NETS = "nets"


def population_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over `devices` (default: every device of every process) named NETS."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.sharding.Mesh(np.array(devices), (NETS,))


def padded_size(num_nets: int, mesh: jax.sharding.Mesh) -> int:
  """`num_nets` rounded up to a multiple of the mesh's devices (each holds as many)."""
  d = mesh.devices.size
  return -(-num_nets // d) * d


def global_array(mesh, spec, host_array) -> jax.Array:
  """`host_array` (the same on every process) as one array over `mesh`, each process
  filling only its own devices' shards, so it works under multiple controllers."""
  host_array = np.asarray(host_array)
  return jax.make_array_from_callback(host_array.shape, NamedSharding(mesh, spec),
                                      lambda idx: host_array[idx])


def population_inputs(keys, images, mesh: jax.sharding.Mesh) -> tuple[jax.Array, jax.Array]:
  """The nets' key data and float32 images as arrays sharded over `mesh`'s nets axis,
  the last net repeated to fill the mesh (`padded_size`). `images` is one (S, S, 3)
  image for every key or (P, S, S, 3), one per key."""
  keys = list(keys)
  if not keys:
    raise InputError("a population needs at least one key")
  images = np.asarray(images, np.float32)
  if images.ndim == 3:
    images = np.broadcast_to(images, (len(keys),) + images.shape)
  if images.ndim != 4 or len(images) != len(keys):
    raise InputError(f"images must be one (S, S, 3) image or one per key, got shape "
                     f"{images.shape} for {len(keys)} keys")
  rows = np.minimum(np.arange(padded_size(len(keys), mesh)), len(keys) - 1)
  key_data = np.stack([np.asarray(jax.random.key_data(k)) for k in keys])
  nets = PartitionSpec(NETS)
  return global_array(mesh, nets, key_data[rows]), global_array(mesh, nets, images[rows])


class RuleState(NamedTuple):
  """Each net's plateau rule on the device, (P,) arrays: whether it still trains, and
  the rule's best, last gain and epoch (`Plateau.device_update`)."""
  active: jax.Array
  best: jax.Array
  last_gain: jax.Array
  epoch: jax.Array


class PopulationFunctions(NamedTuple):
  """The sharded programs of a population: each maps the nets' axis over the mesh
  (shard_map) and vmaps it inside a device; nothing crosses devices."""
  init: Callable   # (key data (P, k), images (P, S, S, 3)) -> (states, train, val, rule)
  block: Callable  # (states, train, val, key data, images, rule, start, count) ->
                   #   (states, rule, (train metrics, val metrics, ran), each (P, size, ...));
                   #   states and rule donated


def population_functions(options: FitOptions, mesh: jax.sharding.Mesh) -> PopulationFunctions:
  """The jitted, sharded init (fresh nets and each net's fixed pairs, made on its own
  device from its own key) and block of up to `epochs_per_sync` epochs of a population
  of a variant on the paper's pairs (`paper`, `encdec`) under `options`.

  In a block each net applies the plateau rule itself after every epoch and stops
  moving once it has converged, so the nets stop where `fit` stops them without a
  host sync per epoch; the host replays the rule on the block's metrics afterwards."""
  paper = options.variant_impl
  if not isinstance(paper, variants.Paper):
    names = [v.name for v in variants.REGISTRY.values() if isinstance(v, variants.Paper)]
    raise InputError(f"populations fit the variants on the paper's pairs only "
                     f"({', '.join(names)}), not {paper.name}")
  size = options.epochs_per_sync
  rule = Plateau(options.patience, options.rel_tol)
  nets, rep = PartitionSpec(NETS), PartitionSpec()

  def init_one(kd, image):
    key = jax.random.wrap_key_data(kd)
    fresh = RuleState(jnp.bool_(True), jnp.float32(jnp.inf), jnp.int32(-1), jnp.int32(-1))
    return (init_state(key, options), *paper.fixed_data(key, image, options), fresh)

  run_epoch, run_val = paper.epoch_functions(options)

  def epoch_one(ts, train, val, key, image, epoch):
    # The variant's own epoch and validation, on this net's data: `fit` runs the same.
    data = {"train": train, "val": val, "image": image, "key": key}
    new, m = run_epoch(ts, data, epoch)
    return new, m, run_val(new, data)

  def block_one(ts, train, val, kd, image, rs, start, count):
    key = jax.random.wrap_key_data(kd)
    shapes = jax.eval_shape(lambda t: epoch_one(t, train, val, key, image, start)[1:], ts)
    # The buffers start as constants but hold each net's own values: mark them as
    # varying over the nets axis, as the loop's carry must be (shard_map's type check).
    buffers = jax.tree.map(
        lambda a: jax.lax.pcast(jnp.zeros((size,) + a.shape, a.dtype), (NETS,), to="varying"),
        shapes + (jax.ShapeDtypeStruct((), jnp.bool_),))

    def body(i, carry):
      ts, rs, bufs = carry
      ran = rs.active
      new, m, v = epoch_one(ts, train, val, key, image, start + i)
      best, gain, epoch, converged = rule.device_update(rs.best, rs.last_gain, rs.epoch,
                                                        v["loss"])
      # A converged net keeps its state: the others go on without it moving.
      keep = lambda old, upd: jnp.where(rs.active, upd, old)
      ts = jax.tree.map(keep, ts, new)
      rs = RuleState(rs.active & ~converged, *map(keep, (rs.best, rs.last_gain, rs.epoch),
                                                  (best, gain, epoch)))
      bufs = jax.tree.map(lambda buf, x: buf.at[i].set(x), bufs, (m, v, ran))
      return ts, rs, bufs

    return jax.lax.fori_loop(0, count, body, (ts, rs, buffers))

  def sharded(fn, in_specs):
    return jax.shard_map(jax.vmap(fn, in_axes=tuple(0 if s == nets else None
                                                    for s in in_specs)),
                         mesh=mesh, in_specs=in_specs, out_specs=nets)

  init = jax.jit(sharded(init_one, (nets, nets)))
  block = jax.jit(sharded(block_one, (nets,) * 6 + (rep, rep)), donate_argnums=(0, 5))
  return PopulationFunctions(init, block)


def fit_population(keys, images, options: FitOptions, *,
                   mesh: Optional[jax.sharding.Mesh] = None,
                   on_epoch: Optional[Callable[[int, FitState, dict], None]] = None
                   ) -> tuple[list[FitState], list[str]]:
  """Fits one net per (key, image) all at once; returns the per-net final states and
  why each stopped, as `fit(key, image, options)` would give them.

  `images` is one (S, S, 3) image for every net or (P, S, S, 3), one per key. The nets
  are spread over `mesh` (default: all devices of all processes; see
  `population_mesh`) and vmapped within a device; when P is not a multiple of the
  device count the last net is repeated to fill the mesh and the copies are dropped
  (a copy stops when its original does, so it never lengthens the run). The nets run
  `epochs_per_sync` epochs between host syncs, each stopping on the device when its
  plateau rule fires; at a sync the host reads every net's metrics (gathered from
  every process) and replays the rule on them. `on_epoch(i, state, record)` runs for
  every epoch a net trained (state holds the plateau and epoch only), a block at a
  time. Same call on every process under multiple controllers.
  """
  keys = list(keys)
  mesh = population_mesh() if mesh is None else mesh
  fns = population_functions(options, mesh)
  kd, im = population_inputs(keys, images, mesh)
  p, total = len(keys), kd.shape[0]
  ts, train, val, device_rule = fns.init(kd, im)
  rule = Plateau(options.patience, options.rel_tol)
  plateaus = [rule.init() for _ in range(total)]
  done = [False] * total
  reasons = [f"reached num_epochs={options.num_epochs}"] * total
  epochs = [0] * total
  rep = PartitionSpec()
  start = 0
  while start < options.num_epochs and not all(done):
    count = min(options.epochs_per_sync, options.num_epochs - start)
    ts, device_rule, metrics = fns.block(ts, train, val, kd, im, device_rule,
                                         global_array(mesh, rep, np.int32(start)),
                                         global_array(mesh, rep, np.int32(count)))
    m, v, ran = multihost_utils.process_allgather(metrics, tiled=True)
    for i in range(total):
      for j in range(count):
        if not ran[i, j]:
          continue
        if done[i]:  # the device went on where the host's rule had stopped
          raise AssertionError(f"net {i}: the device and host plateau rules disagree")
        try:
          record = epoch_record(start + j + 1, {k: x[i, j] for k, x in m.items()},
                                {k: x[i, j] for k, x in v.items()})
        except TrainingDiverged as e:
          raise TrainingDiverged(f"net {i}: {e}") from None
        plateaus[i], converged = rule.update(plateaus[i], record["val_loss"])
        epochs[i] = start + j + 1
        if on_epoch is not None and i < p:
          on_epoch(i, FitState(None, plateaus[i], epochs[i]), record)
        if converged:
          done[i], reasons[i] = True, converged_reason(options)
      if not done[i] and not ran[i, count - 1]:
        raise AssertionError(f"net {i}: the device and host plateau rules disagree")
    start += count
  arrays = multihost_utils.process_allgather((ts.step, ts.params, ts.opt_state), tiled=True)
  states = []
  for i in range(p):
    step, params, opt_state = jax.tree.map(lambda a: jnp.asarray(a[i]), arrays)
    states.append(FitState(ts.replace(step=step, params=params, opt_state=opt_state),
                           plateaus[i], epochs[i]))
  return states, reasons[:p]


def fit_seeds(keys, image, options: FitOptions,
              on_epoch: Optional[Callable[[int, FitState, dict], None]] = None
              ) -> tuple[list[FitState], list[str]]:
  """Fits one net per key to `image`, all together (`fit_population`); returns the
  per-key final states and reasons, each as `fit(key, image, options)` gives them."""
  return fit_population(keys, image, options, on_epoch=on_epoch)
