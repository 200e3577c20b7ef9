import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from singleseg_jax import (InputError, Plateau, TrainState, Upsampler, evaluate, make_dataset,
                           make_optimizer, prepare_image, train_epoch, train_step)
from singleseg_jax.fit import FitOptions
from singleseg_jax.paper.model import backward_bytes_per_sample
from singleseg_jax.train import batch_value_and_grad, matlab_loss, resolve_microbatch


def _state(in_channels=16, width=0.125, seed=0, lr=1e-3):
  return TrainState.create(Upsampler(in_channels, width, rngs=nnx.Rngs(seed)),
                           make_optimizer(lr))


def test_matlab_loss_is_half_sse_per_sample():
  pred, tgt = jnp.ones((4, 2, 2, 3)), jnp.zeros((4, 2, 2, 3))
  assert float(matlab_loss(pred, tgt)) == pytest.approx(0.5 * 12)


def test_optimizer_is_l2_on_kernels_then_adam():
  state = _state()
  grads = jax.tree.map(jnp.ones_like, state.params)
  updates, _ = state.tx.update(grads, state.opt_state, state.params)
  # First Adam step: update = -lr * g / (|g| + eps) elementwise, g = grad + 1e-4 * w on
  # kernels only -> every update is -1e-3 (up to eps) since g > 0 everywhere here.
  for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
    np.testing.assert_allclose(np.asarray(u), -1e-3, rtol=1e-4)
  # With zero loss gradient only the L2 term moves kernels, and biases get nothing.
  zero = jax.tree.map(jnp.zeros_like, state.params)
  updates, _ = state.tx.update(zero, state.tx.init(state.params), state.params)
  layer = updates["layers"][0]
  assert not np.any(np.asarray(layer["bias"][...]))
  g = 1e-4 * np.asarray(state.params["layers"][0]["kernel"][...], np.float64)
  np.testing.assert_allclose(np.asarray(layer["kernel"][...]), -1e-3 * g / (np.abs(g) + 1e-8),
                             rtol=1e-4, atol=1e-9)


def test_loss_falls_on_one_image(photo):
  train, val = make_dataset(jax.random.key(0), prepare_image(photo).image, 200, 16)
  state = _state(lr=3e-3)
  before = float(evaluate(state, val)["mse"])
  losses = []
  for epoch in range(60):  # 60 epochs x 6 updates = 360 steps
    state, m = train_epoch(state, train, jax.random.key(epoch), batch_size=25)
    losses.append(float(m["loss"]))
  after = float(evaluate(state, val)["mse"])
  assert int(state.step) == 360
  assert np.all(np.isfinite(losses))
  assert after < 0.5 * before, (before, after)
  assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_epoch_scan_in_chunks_equals_whole_batch_step_loop(photo):
  # The epoch's scan, each update's gradient the mean of two chunks of 5 samples, against
  # a loop of whole-batch steps: the same updates up to float rounding.
  train, _ = make_dataset(jax.random.key(0), prepare_image(photo).image, 40, 8)
  s1 = _state(8)
  s1, m1 = train_epoch(s1, train, jax.random.key(3), batch_size=10, microbatch=5)
  s2 = _state(8)
  order = np.asarray(jax.random.permutation(jax.random.key(3), 30))[:30].reshape(3, 10)
  losses = []
  for idx in order:
    s2, m = train_step(s2, {"inputs": train.inputs[idx], "targets": train.targets[idx]})
    losses.append(float(m["loss"]))
  assert float(m1["loss"]) == pytest.approx(np.mean(losses), rel=1e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_microbatch_choice():
  # auto (0): on CPU the largest divisor up to 10, if at least 5; the whole batch on
  # accelerators, and for batches with no such divisor.
  assert [resolve_microbatch(0, b, "cpu") for b in (50, 16, 25, 10, 13, 22, 3)] == \
      [10, 8, 5, 10, 13, 22, 3]
  assert resolve_microbatch(0, 50, "gpu") == 50 and resolve_microbatch(25, 50, "gpu") == 25
  # ... and only a batch whose backward working set is over 16 MiB: the cat net's is at
  # 50 and 16 (110 and 35 MiB), the tests' tiny net's at 15 (7 MiB) is not.
  cat, tiny = backward_bytes_per_sample(256, 1.0), backward_bytes_per_sample(8, 0.125)
  assert [resolve_microbatch(0, b, "cpu", sample_bytes=cat) for b in (50, 16)] == [10, 8]
  assert resolve_microbatch(0, 15, "cpu", sample_bytes=tiny) == 15
  for bad in (7, -1, 2.5, True):
    with pytest.raises(InputError, match="microbatch"):
      resolve_microbatch(bad, 50, "cpu")
  with pytest.raises(InputError, match="batch_size"):
    resolve_microbatch(0, 0, "cpu")
  # Snap never chunks, so any microbatch >= 0 is accepted beside its batch; the paper
  # net's must divide it.
  assert FitOptions(variant="snap", batch_size=10, microbatch=3).microbatch == 3
  with pytest.raises(InputError, match="microbatch 3 does not divide batch_size 10"):
    FitOptions(batch_size=10, microbatch=3)
  with pytest.raises(InputError, match="microbatch must be"):
    FitOptions(variant="snap", microbatch=-1)


def test_chunk_j_holds_samples_j_j_plus_k():
  # 6 samples in chunks of 2 (k = 3 chunks): {0, 3}, {1, 4}, {2, 5}, so the chunks' first
  # samples are 0, 1, 2 (mean 1); contiguous chunks would give 0, 2, 4 (mean 2).
  def loss_fn(w, batch):
    x = batch["inputs"]
    return jnp.mean(w * x), {"first": x[0]}

  (loss, aux), grad = batch_value_and_grad(loss_fn, jnp.float32(2.0),
                                           {"inputs": jnp.arange(6.0)}, microbatch=2)
  assert float(aux["first"]) == 1.0
  assert float(loss) == pytest.approx(5.0) and float(grad) == pytest.approx(2.5)


def test_batch_size_errors(photo):
  train, _ = make_dataset(jax.random.key(0), prepare_image(photo).image, 20, 4)
  with pytest.raises(InputError, match="larger"):
    train_epoch(_state(4), train, jax.random.key(0), batch_size=100)
  with pytest.raises(InputError):
    make_optimizer(learning_rate=-1.0)
  with pytest.raises(InputError):
    make_optimizer(l2=float("nan"))


def test_plateau_rule():
  rule = Plateau(patience=3, rel_tol=0.01)
  st = rule.init()
  stops = []
  for v in [10, 9, 8.95, 8.94, 8.93, 8.0, 7.99, 7.98, 7.97]:
    st, stop = rule.update(st, v)
    stops.append(stop)
  # gains (>1%) at epochs 0, 1, 5; three epochs after 1 -> epoch 4 stops; after 5 -> 8.
  assert stops == [False, False, False, False, True, False, False, False, True]
  assert st.best == np.float32(7.97) and st.best_epoch == 8
  with pytest.raises(InputError):
    Plateau(patience=0)


def test_the_device_plateau_rule_decides_as_the_host_rule():
  # Values one float32 ulp either side of the threshold are where a float64 host rule
  # and a float32 device rule would part; the two forms must not.
  rule = Plateau(patience=2, rel_tol=1e-3)
  rng = np.random.default_rng(0)
  values, v = [], np.float32(100.0)
  for _ in range(200):
    t = v * rule.factor
    v = rng.choice([np.nextafter(t, np.float32(0)), t, np.nextafter(t, np.float32(np.inf)),
                    v * np.float32(1.01)]).astype(np.float32)
    values.append(v)
  host, st = [], rule.init()
  for x in values:
    st, stop = rule.update(st, x)
    host.append((st.last_gain, stop))
  step = jax.jit(rule.device_update)
  best, gain, epoch, device = jnp.float32(jnp.inf), jnp.int32(-1), jnp.int32(-1), []
  for x in values:
    best, gain, epoch, stop = step(best, gain, epoch, jnp.float32(x))
    device.append((int(gain), bool(stop)))
  assert device == host
  assert 0 < sum(s for _, s in host) < len(values)  # the rule both fired and held off
