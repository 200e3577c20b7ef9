"""Fitting a net to one image: data, model, epochs and the convergence rule together.

Two variants (`FitOptions.variant`):
- `paper`: the seed's Upsampler on thumbnails of rectangles and circles (the default,
  unchanged);
- `snap`: `singleseg_jax.snap`'s superpixel graph net on sloppy outlines of
  self-generated regions (beyond the paper, issue #8). Its "epoch" is `snap_steps`
  updates on fresh batches; `num_samples - ceil(train_fraction * num_samples)` fixed
  pairs are its validation set.

Every random choice comes from one key: `fold_in(key, 0)` initialises the model,
`fold_in(key, 1)` makes the fixed pair set, and epoch `e` shuffles with
`fold_in(fold_in(key, 2), e)` (snap: draws its batches from it; and, with
`fresh_data`, the paper variant draws new training pairs from
`fold_in(fold_in(key, 3), e)`). So a run restarted at epoch `e` from its saved state
continues exactly as the uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from singleseg_jax import regions, snap
from singleseg_jax.data import Dataset, make_dataset, make_pairs
from singleseg_jax.errors import InputError
from singleseg_jax.model import Upsampler
from singleseg_jax.train import (Plateau, PlateauState, TrainState, epoch_update, evaluate,
                                 evaluate_loss, make_optimizer, num_batches, train_epoch)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
VARIANTS = ("paper", "snap")


@dataclasses.dataclass(frozen=True)
class FitOptions:
  """The knobs of one fit; defaults are the seed's cat/dog run."""
  in_channels: int = 256
  width: float = 1.0
  num_samples: int = 1000
  train_fraction: float = 0.75
  batch_size: int = 50
  num_epochs: int = 500
  learning_rate: float = 1e-3
  l2: float = 1e-4
  patience: int = 25
  rel_tol: float = 1e-3
  fresh_data: bool = False
  dtype: str = "float32"
  variant: str = "paper"
  snap_segments: int = 100   # superpixels per image
  snap_hidden: int = 64      # graph net width
  snap_rounds: int = 3       # message-passing rounds
  snap_steps: int = 25       # updates per epoch (each on a fresh batch of batch_size)

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise InputError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
    for name in ("snap_segments", "snap_hidden", "snap_steps"):
      v = getattr(self, name)
      if not isinstance(v, int) or v < 1:
        raise InputError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(self.snap_rounds, int) or self.snap_rounds < 0:
      raise InputError(f"snap_rounds must be an integer >= 0, got {self.snap_rounds!r}")
    if self.dtype not in DTYPES:
      raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
    if not isinstance(self.num_epochs, int) or self.num_epochs < 1:
      raise InputError(f"num_epochs must be a positive integer, got {self.num_epochs!r}")
    Plateau(self.patience, self.rel_tol)  # validates both


class FitState(NamedTuple):
  """What a checkpoint must hold to continue a fit."""
  train: TrainState
  plateau: PlateauState
  epoch: int  # epochs completed


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite."""


def model_key(key):
  return jax.random.fold_in(key, 0)


def init_state(key: jax.Array, options: FitOptions) -> TrainState:
  """A fresh model and optimiser for `options`."""
  if options.variant == "snap":
    model = snap.SnapNet(options.snap_hidden, options.snap_rounds, options.snap_segments,
                         rngs=nnx.Rngs(params=model_key(key)))
    return TrainState.create(model, make_optimizer(options.learning_rate, options.l2))
  model = Upsampler(options.in_channels, options.width, dtype=DTYPES[options.dtype],
                    rngs=nnx.Rngs(params=model_key(key)))
  return TrainState.create(model, make_optimizer(options.learning_rate, options.l2))


def fixed_data(key: jax.Array, image, options: FitOptions) -> tuple[Dataset, Dataset]:
  """The seed's fixed pair set (train, val) for `image` ((S, S, 3) uint8)."""
  train, val = make_dataset(jax.random.fold_in(key, 1), image, options.num_samples,
                            options.in_channels, options.train_fraction)
  num_batches(len(train), options.batch_size)  # validates batch_size early
  return train, val


def _n_train(options: FitOptions) -> int:
  return -(-int(round(options.train_fraction * options.num_samples * 1e6)) // 1_000_000)


def snap_data(key: jax.Array, image, options: FitOptions) -> tuple[snap.Graph, snap.Batch]:
  """The snap variant's superpixel graph of `image` and its fixed validation pairs."""
  graph = jax.jit(snap.make_graph, static_argnums=1)(jnp.asarray(image, jnp.float32),
                                                      options.snap_segments)
  n_val = options.num_samples - _n_train(options)
  if n_val < 1:
    raise InputError(f"train_fraction {options.train_fraction} leaves no val pairs")
  val = jax.jit(snap.sample_batch, static_argnums=2)(jax.random.fold_in(key, 1), graph, n_val)
  return graph, val


def _epoch_functions(key, image, options: FitOptions):
  """(run_epoch(state, epoch) -> (state, train metrics), run_val(state) -> metrics)."""
  shuffle = lambda epoch: jax.random.fold_in(jax.random.fold_in(key, 2), epoch)
  if options.variant == "snap":
    graph, val = snap_data(key, image, options)
    prior = regions.RegionPrior()

    def run_epoch(ts, epoch):
      return snap.train_epoch(ts, graph, shuffle(epoch), steps=options.snap_steps,
                              batch_size=options.batch_size, prior=prior)

    return run_epoch, lambda ts: snap.evaluate(ts, graph, val)

  train, val = fixed_data(key, image, options)
  image_f = jnp.asarray(image, jnp.float32)
  n_train = len(train)

  def run_epoch(ts, epoch):
    data = train
    if options.fresh_data:
      data = make_pairs(jax.random.fold_in(jax.random.fold_in(key, 3), epoch), image_f,
                        n_train, options.in_channels)
    return train_epoch(ts, data, shuffle(epoch), batch_size=options.batch_size)

  return run_epoch, lambda ts: evaluate(ts, val, batch_size=options.batch_size)


def fit(key: jax.Array, image, options: FitOptions, *, resume: Optional[FitState] = None,
        on_epoch: Optional[Callable[[FitState, dict], None]] = None) -> tuple[FitState, str]:
  """Trains until convergence or `num_epochs`; returns the final state and why it stopped.

  `on_epoch(state, record)` runs after every epoch (for logging and checkpoints); the
  record holds the epoch's mean train and val metrics (`train_loss`, `val_loss`, and
  `train_mse`/`val_mse` for the paper variant, `train_error`/`val_error`, the share of
  pixels labelled wrong, for snap).
  Raises `TrainingDiverged` (the state passed to the last `on_epoch` is the last good
  one) if the training loss stops being finite.
  """
  run_epoch, run_val = _epoch_functions(key, image, options)
  rule = Plateau(options.patience, options.rel_tol)
  state = resume or FitState(init_state(key, options), rule.init(), 0)
  if rule.converged(state.plateau):
    return state, _converged_reason(options)
  for epoch in range(state.epoch, options.num_epochs):
    ts, m = run_epoch(state.train, epoch)
    v = run_val(ts)
    record = {"epoch": epoch + 1, **{f"train_{k}": float(x) for k, x in m.items()},
              **{f"val_{k}": float(x) for k, x in v.items()}}
    if not all(math.isfinite(x) for x in record.values()):
      raise TrainingDiverged(f"loss is not finite at epoch {epoch + 1}: {record}")
    plateau, converged = rule.update(state.plateau, record["val_loss"])
    state = FitState(ts, plateau, epoch + 1)
    if on_epoch is not None:
      on_epoch(state, record)
    if converged:
      return state, _converged_reason(options)
  return state, f"reached num_epochs={options.num_epochs}"


def _converged_reason(options: FitOptions) -> str:
  return (f"converged: val loss did not improve by {options.rel_tol:g} (relative) "
          f"for {options.patience} epochs")


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def stack_states(states: list[TrainState]) -> TrainState:
  """One TrainState whose arrays have a leading axis over `states` (for jax.vmap)."""
  return states[0].replace(step=_stack([s.step for s in states]),
                           params=_stack([s.params for s in states]),
                           opt_state=_stack([s.opt_state for s in states]))


def fit_seeds(keys, image, options: FitOptions,
              on_epoch: Optional[Callable[[int, FitState, dict], None]] = None
              ) -> tuple[list[FitState], list[str]]:
  """Fits one net per key, all together: params stacked and the epoch `jax.vmap`-ed.

  Each net sees exactly the data, shuffles and stopping epoch that `fit(key, ...)`
  would give it: a net that has converged is frozen (its update is discarded) while the
  others go on, and the loop ends when all have stopped. `on_epoch(i, state, record)`
  runs for every net still training. Returns the per-key final states and reasons.
  """
  keys = list(keys)
  if not keys:
    raise InputError("fit_seeds needs at least one key")
  if options.variant != "paper":
    raise InputError("fit_seeds fits the paper variant only")
  rule = Plateau(options.patience, options.rel_tol)
  inits = [init_state(k, options) for k in keys]
  data = [fixed_data(k, image, options) for k in keys]
  template = inits[0]
  ts = stack_states(inits)
  train = _stack([d[0] for d in data])
  val = _stack([d[1] for d in data])
  bs = options.batch_size
  step = jax.jit(jax.vmap(lambda st, d, k: epoch_update(st, d, k, batch_size=bs)))
  score = jax.jit(jax.vmap(lambda st, d: evaluate_loss(st, d, batch_size=bs)))
  fresh = jax.jit(jax.vmap(lambda k: make_pairs(k, jnp.asarray(image, jnp.float32),
                                                len(data[0][0]), options.in_channels)))
  plateaus = [rule.init() for _ in keys]
  done = [False] * len(keys)
  reasons = [f"reached num_epochs={options.num_epochs}"] * len(keys)
  epochs = [0] * len(keys)
  for epoch in range(options.num_epochs):
    if options.fresh_data:
      train = fresh(jnp.stack([jax.random.fold_in(jax.random.fold_in(k, 3), epoch) for k in keys]))
    shuffle = jnp.stack([jax.random.fold_in(jax.random.fold_in(k, 2), epoch) for k in keys])
    new, m = step(ts, train, shuffle)
    v = score(new, val)
    frozen = jnp.asarray(done)
    ts = jax.tree.map(lambda old, upd: jnp.where(
        frozen.reshape((-1,) + (1,) * (upd.ndim - 1)), old, upd), ts, new)
    m, v = jax.device_get((m, v))
    for i in range(len(keys)):
      if done[i]:
        continue
      record = {"epoch": epoch + 1, "train_loss": float(m["loss"][i]),
                "train_mse": float(m["mse"][i]), "val_loss": float(v["loss"][i]),
                "val_mse": float(v["mse"][i])}
      if not all(math.isfinite(x) for x in record.values()):
        raise TrainingDiverged(f"seed {i}: loss is not finite at epoch {epoch + 1}")
      plateaus[i], converged = rule.update(plateaus[i], record["val_loss"])
      epochs[i] = epoch + 1
      if on_epoch is not None:
        on_epoch(i, FitState(None, plateaus[i], epochs[i]), record)
      if converged:
        done[i], reasons[i] = True, _converged_reason(options)
    if all(done):
      break
  states = []
  for i in range(len(keys)):
    one = jax.tree.map(lambda a: a[i], (ts.step, ts.params, ts.opt_state))
    states.append(FitState(template.replace(step=one[0], params=one[1], opt_state=one[2]),
                           plateaus[i], epochs[i]))
  return states, reasons
