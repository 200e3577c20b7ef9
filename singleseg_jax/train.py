"""Training: the state, one jitted update, an epoch as a scan, and a plateau rule.

The optimiser is the seed's: Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8) with L2
regularisation 1e-4 on kernels only, added to the gradient before Adam (MATLAB's
`L2Regularization`; biases have `BiasL2Factor` 0). The loss is MATLAB's
`regressionLayer`: half the squared error summed over pixels and channels, averaged
over the batch. Per-pixel MSE is reported beside it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from singleseg_jax.paper.data import Dataset
from singleseg_jax.paper.model import PAPER_SCALE, PAPER_SIZE, backward_bytes_per_sample
from singleseg_jax.errors import InputError


class TrainState(flax.struct.PyTreeNode):
  """Everything an update changes (a pytree), plus the static model graph and optimiser."""
  step: jax.Array
  params: Any
  opt_state: Any
  graphdef: Any = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, model: nnx.Module, tx: optax.GradientTransformation) -> "TrainState":
    """The state of a fresh `model` and optimiser `tx`."""
    graphdef, params = nnx.split(model, nnx.Param)
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               graphdef=graphdef, tx=tx)

  def model(self) -> nnx.Module:
    """A module holding the current parameters."""
    return nnx.merge(self.graphdef, self.params)


def _is_kernel(path, _):
  return any(getattr(k, "key", None) == "kernel" for k in path)


def make_optimizer(learning_rate: float = 1e-3, l2: float = 1e-4, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
  """Adam with L2 on kernels added to the gradient first (the seed's trainingOptions)."""
  for name, v in (("learning_rate", learning_rate), ("l2", l2), ("eps", eps)):
    if not (isinstance(v, (int, float)) and v >= 0 and v == v and v != float("inf")):
      raise InputError(f"{name} must be a finite number >= 0, got {v!r}")
  if not learning_rate > 0:
    raise InputError(f"learning_rate must be > 0, got {learning_rate!r}")
  kernel_mask = lambda params: jax.tree.map_with_path(_is_kernel, params)
  return optax.chain(optax.add_decayed_weights(l2, mask=kernel_mask),
                     optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


def matlab_loss(pred, target):
  """regressionLayer: 0.5 * sum of squared errors per sample, mean over the batch."""
  err = (pred - target).astype(jnp.float32)
  return 0.5 * jnp.sum(err * err) / pred.shape[0]


def mse(pred, target):
  """Mean squared error per pixel and channel."""
  err = (pred - target).astype(jnp.float32)
  return jnp.mean(err * err)


def _apply(state: TrainState, loss, metrics: dict, grads) -> tuple[TrainState, dict]:
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new, {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads)}


def gradient_step(state: TrainState, loss_fn) -> tuple[TrainState, dict]:
  """One optimiser update; `loss_fn(model) -> (loss, metrics)`. Returns (state, metrics).

  The one update of every variant: the metrics are `loss`, `loss_fn`'s own, and the
  gradient's global norm `grad_norm`.
  """

  def of_params(params):
    return loss_fn(nnx.merge(state.graphdef, params))

  (loss, metrics), grads = jax.value_and_grad(of_params, has_aux=True)(state.params)
  return _apply(state, loss, metrics, grads)


#: Samples per gradient chunk that `microbatch=0` picks on CPU (`resolve_microbatch`).
#: On CPU a whole batch's activations and tap matrices overflow the cache, and every
#: memory-bound pass (tap gathers, ReLU masks, bias sums) runs from RAM; in chunks of 10
#: they stay in cache. Measured in docs/speed.md, for the cat and the car net.
CPU_MICROBATCH = 10
#: The smallest chunk auto picks: below it, per-chunk overheads and thin GEMMs win.
MIN_MICROBATCH = 5
#: Auto chunks only a batch whose backward working set is larger than this, half the
#: 32 MiB L3 of the CPU it was measured on (docs/speed.md): the demo's net at 29 MiB ran
#: 1.22x faster in chunks of 5, the tests' tiny net at 7 MiB 0.98x.
CACHE_BYTES = 16 << 20


def check_microbatch(microbatch: int, batch_size: int | None) -> int:
  """`microbatch` itself if it is 0 (auto) or a divisor of `batch_size` (any integer
  >= 0 for None: a fit that does not chunk); InputError otherwise. Asks no backend, so
  validating a config starts none."""
  if not isinstance(microbatch, int) or isinstance(microbatch, bool) or microbatch < 0:
    raise InputError(f"microbatch must be an integer >= 0 (0: auto), got {microbatch!r}")
  if batch_size is None:
    return microbatch
  if not isinstance(batch_size, int) or batch_size < 1:
    raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
  if microbatch and batch_size % microbatch:
    raise InputError(f"microbatch {microbatch} does not divide batch_size {batch_size}")
  return microbatch


def resolve_microbatch(microbatch: int, batch_size: int, platform: str | None = None,
                       sample_bytes: int | None = None) -> int:
  """Samples per gradient chunk for a `batch_size` step: `microbatch` itself if it is a
  divisor of the batch; for 0 ("auto"), on CPU the largest divisor of the batch up to
  CPU_MICROBATCH (the whole batch if that is below MIN_MICROBATCH). Auto keeps the
  whole batch on other backends (`platform`, default JAX's), which large batches keep
  busy, and where the batch's backward working set (`sample_bytes` per sample,
  `model.backward_bytes_per_sample`; None: large) fits in CACHE_BYTES. Every `layer`
  form chunks alike: the Winograd step too runs fastest in chunks of 10 (docs/speed.md)."""
  if check_microbatch(microbatch, batch_size):
    return microbatch
  if (platform or jax.default_backend()) != "cpu":
    return batch_size
  if sample_bytes is not None and sample_bytes * batch_size <= CACHE_BYTES:
    return batch_size
  chunk = max(d for d in range(1, min(batch_size, CPU_MICROBATCH) + 1) if batch_size % d == 0)
  return chunk if chunk >= MIN_MICROBATCH else batch_size


def net_microbatch(microbatch: int, batch_size: int, in_channels: int, width: float = 1.0,
                   size: int = PAPER_SIZE, scale: float = PAPER_SCALE,
                   platform: str | None = None) -> int:
  """`resolve_microbatch` for the paper's net of these shape knobs (its backward
  working set from `model.backward_bytes_per_sample`): what training and the
  benchmarks chunk a batch by."""
  return resolve_microbatch(microbatch, batch_size, platform,
                            backward_bytes_per_sample(in_channels, width, size, scale))


def batch_value_and_grad(loss_fn, params, batch: dict, microbatch: int | None = None):
  """((loss, metrics), grads) of `loss_fn(params, batch)`, a mean over the batch's samples
  (every array of `batch` is per sample), computed whole or, with `microbatch` < the
  batch, as the mean over equal chunks of `microbatch` samples in a scan: the same
  gradient up to float rounding, with a working set that fits in a CPU's cache.

  Chunk j holds samples j, j + k, j + 2k, ... (k chunks), so a batch sharded over
  devices in contiguous blocks gives every device an equal share of every chunk (when
  the devices divide `microbatch`). Per-sample arrays only: a shared one, such as the
  fitted image, belongs in `loss_fn`.
  """
  size = jax.tree.leaves(batch)[0].shape[0]
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
  if not microbatch or microbatch >= size:
    return value_and_grad(params, batch)
  check_microbatch(microbatch, size)
  k = size // microbatch
  chunks = jax.tree.map(lambda a: jnp.swapaxes(a.reshape(microbatch, k, *a.shape[1:]), 0, 1),
                        batch)
  total = jax.tree.map(jnp.zeros_like, jax.eval_shape(value_and_grad, params,
                                                      jax.tree.map(lambda a: a[0], chunks)))

  def body(total, chunk):
    return jax.tree.map(jnp.add, total, value_and_grad(params, chunk)), None

  total, _ = jax.lax.scan(body, total, chunks)
  return jax.tree.map(lambda t: t / k, total)


def apply_model(model: nnx.Module, inputs, image=None):
  """`model` on network inputs; a net with `takes_image` (the encoder-decoder) is also
  given the fitted image ((S, S, 3), 0..255 levels), which the paper's net never sees."""
  if not getattr(model, "takes_image", False):
    return model(inputs)
  if image is None:
    raise InputError(f"{type(model).__name__} needs the fitted image beside its input")
  return model(inputs, image)


def regression_loss(graphdef, image=None):
  """`loss_fn(params, batch) -> (loss, metrics)` of the paper's net on
  {'inputs': (B,h,w,C), 'targets': (B,H,W,3)}; `image` (the fitted image) for nets that
  take it (`apply_model`)."""

  def loss_fn(params, batch):
    pred = apply_model(nnx.merge(graphdef, params), batch["inputs"], image)
    return matlab_loss(pred, batch["targets"]), {"mse": mse(pred, batch["targets"])}

  return loss_fn


def _train_step(state: TrainState, batch: dict,
                microbatch: int | None = None) -> tuple[TrainState, dict]:
  per_sample = {k: batch[k] for k in ("inputs", "targets")}
  loss_fn = regression_loss(state.graphdef, batch.get("image"))
  (loss, metrics), grads = batch_value_and_grad(loss_fn, state.params, per_sample, microbatch)
  return _apply(state, loss, metrics, grads)


#: One Adam update of the paper's net on a batch ({'inputs', 'targets'} and, for nets
#: that take it, 'image'), jitted; `microbatch` as for `batch_value_and_grad` (the state
#: is donated: do not reuse the argument).
train_step = jax.jit(_train_step, donate_argnums=0, static_argnames=("microbatch",))


def num_batches(num_samples: int, batch_size: int) -> int:
  """Updates per epoch: full batches only (MATLAB drops the remainder)."""
  if not isinstance(batch_size, int) or batch_size < 1:
    raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
  if batch_size > num_samples:
    raise InputError(f"batch_size {batch_size} is larger than the {num_samples} training pairs")
  return num_samples // batch_size


def epoch_update(state: TrainState, data: Dataset, key: jax.Array, *,
                 batch_size: int, image=None,
                 microbatch: int | None = None) -> tuple[TrainState, dict]:
  """One shuffled pass over `data` (full batches), as a scan of `train_step`.

  `image` is the fitted image, for nets that take it (`apply_model`); `microbatch` as
  for `batch_value_and_grad`. Returns the new state and the mean of each metric over
  the epoch's updates.
  """
  n = num_batches(data.inputs.shape[0], batch_size)
  order = jax.random.permutation(key, data.inputs.shape[0])[: n * batch_size]
  order = order.reshape(n, batch_size)

  def body(state, idx):
    batch = {"inputs": data.inputs[idx], "targets": data.targets[idx], "image": image}
    return _train_step(state, batch, microbatch)

  state, metrics = jax.lax.scan(body, state, order)
  return state, jax.tree.map(jnp.mean, metrics)


#: `epoch_update`, jitted (the state is donated). vmap `epoch_update` itself to train
#: several nets at once (`fit.population_functions`).
train_epoch = jax.jit(epoch_update, static_argnames=("batch_size", "microbatch"),
                      donate_argnums=0)


def evaluate_loss(state: TrainState, data: Dataset, *, batch_size: int = 50,
                  image=None) -> dict:
  """Mean loss and MSE over all of `data`, in chunks of `batch_size` (last may be short);
  `image` as for `epoch_update`."""
  n = data.inputs.shape[0]
  total = {"loss": 0.0, "mse": 0.0}
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    pred = apply_model(state.model(), data.inputs[start:stop], image)
    err = (pred - data.targets[start:stop]).astype(jnp.float32)
    total["loss"] += 0.5 * jnp.sum(err * err)
    total["mse"] += jnp.sum(err * err) / err[0].size
  return {k: v / n for k, v in total.items()}


#: `evaluate_loss`, jitted.
evaluate = jax.jit(evaluate_loss, static_argnames=("batch_size",))


class PlateauState(NamedTuple):
  """The plateau rule's memory (a small tuple, so it checkpoints with the run)."""
  epoch: int             # epochs seen so far minus one (-1 before the first)
  best: float            # lowest value seen
  best_epoch: int        # when it was seen
  last_gain: int         # last epoch that beat the reference by more than rel_tol


@dataclasses.dataclass(frozen=True)
class Plateau:
  """Convergence rule: stop once `patience` epochs pass without the monitored loss
  falling below `(1 - rel_tol) * best`. The seed's MATLAB run had no such rule (500
  fixed epochs); the paper says training stops when the loss converges, and this is
  that rule made explicit. The state is a small tuple, so it checkpoints with the run.

  The threshold is one float32 multiply (the losses are float32), so `device_update`,
  the same rule in jnp, decides exactly as `update` does: a population can apply it on
  the device for many epochs between host syncs and stop each net where `fit` would.
  """
  patience: int = 25
  rel_tol: float = 1e-3

  def __post_init__(self):
    if not isinstance(self.patience, int) or self.patience < 1:
      raise InputError(f"patience must be a positive integer, got {self.patience!r}")
    if not 0 <= self.rel_tol < 1:
      raise InputError(f"rel_tol must be in [0, 1), got {self.rel_tol!r}")

  @property
  def factor(self) -> np.float32:
    """1 - rel_tol, as the float32 both forms of the rule multiply by."""
    return np.float32(1 - self.rel_tol)

  def init(self) -> PlateauState:
    """The state before the first epoch."""
    return PlateauState(epoch=-1, best=float("inf"), best_epoch=-1, last_gain=-1)

  def update(self, state: PlateauState, value: float) -> tuple[PlateauState, bool]:
    """Feeds one epoch's value; returns (new state, converged)."""
    value = np.float32(value)
    epoch = state.epoch + 1
    gained = bool(value < np.float32(state.best) * self.factor)
    value = float(value)
    new = PlateauState(
        epoch=epoch,
        best=min(value, state.best),
        best_epoch=epoch if value < state.best else state.best_epoch,
        last_gain=epoch if gained else state.last_gain)
    return new, self.converged(new)

  def device_update(self, best, last_gain, epoch, value):
    """`update` in jnp on (best, last_gain, epoch) arrays (no best_epoch: the host
    replays it); returns the new three and whether the rule has converged."""
    epoch = epoch + 1
    # inf * factor stays inf and every finite value is below it, so the first epoch
    # gains with no special case (nor does the host's: float32(inf) * factor is inf).
    gained = value < best * self.factor
    last_gain = jnp.where(gained, epoch, last_gain)
    return jnp.minimum(value, best), last_gain, epoch, epoch - last_gain >= self.patience

  def converged(self, state: PlateauState) -> bool:
    """Whether `patience` epochs have passed without a gain."""
    return state.epoch >= 0 and state.epoch - state.last_gain >= self.patience
