"""The fast ConvTranspose: forward against a direct scatter loop, gradients against autodiff,
and the `layer` choice between them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from singleseg_jax import InputError
from singleseg_jax.paper.layers import (check_layer, conv_transpose, conv_transpose_reference,
                                        output_size, tap_sum, uses_custom_vjp, uses_winograd)
from singleseg_jax.paper.model import LAYERS

CASES = [(stride, crop, act) for _, stride, crop in LAYERS for act in ("relu", "sigmoid")]


def scatter_reference(x, kernel, bias, stride, crop):
  """Definition: out[s*i + a, s*j + b] += x[i, j] @ K[a, b]; then crop (NumPy, float64)."""
  n, h, w, _ = x.shape
  cout = kernel.shape[-1]
  full = np.zeros((n, (h - 1) * stride + 3, (w - 1) * stride + 3, cout))
  for a in range(3):
    for b in range(3):
      full[:, a:a + stride * (h - 1) + 1:stride, b:b + stride * (w - 1) + 1:stride] += x @ kernel[a, b]
  t, bo, l, r = crop
  return full[:, t:full.shape[1] - bo, l:full.shape[2] - r] + bias


def _inputs(cin=5, cout=4, side=6, n=3, seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(k[0], (n, side, side, cin)),
          jax.random.normal(k[1], (3, 3, cin, cout)) * 0.3,
          jax.random.normal(k[2], (cout,)) * 0.1)


@pytest.mark.parametrize("side", [5, 6])
@pytest.mark.parametrize("stride,crop", [(s, c) for _, s, c in LAYERS])
def test_forward_matches_scatter_definition(stride, crop, side):
  x, kernel, bias = _inputs(side=side)
  out = conv_transpose(x, kernel, bias, stride, crop, "linear")
  ref = scatter_reference(np.asarray(x, np.float64), np.asarray(kernel, np.float64),
                          np.asarray(bias, np.float64), stride, crop)
  assert out.shape == ref.shape
  assert out.shape[1] == output_size(side, stride, crop[:2])
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)
  # The tap-sum forward (one GEMM, nine planes added) against XLA's convolution, jitted.
  conv = jax.jit(conv_transpose_reference, static_argnums=(3, 4, 5))(x, kernel, bias, stride,
                                                                     crop, "relu")
  np.testing.assert_allclose(np.asarray(jax.jit(tap_sum, static_argnums=(3, 4, 5))(
      x, kernel, bias, stride, crop, "relu")), np.asarray(conv), rtol=1e-5, atol=1e-5)
  # tap_sum itself stays differentiable by autodiff (the buffer trick lives in the VJP).
  grad = lambda fn: jax.grad(lambda k: jnp.sum(fn(x, k, bias, stride, crop, "relu") ** 2))(kernel)
  np.testing.assert_allclose(np.asarray(grad(tap_sum)), np.asarray(grad(conv_transpose_reference)),
                             rtol=2e-5, atol=2e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the cond is used on CPU only")
def test_nan_weight_gives_nan_output_alone_and_in_a_population():
  # The tap-sum forward keeps its output in one buffer through a cond on the first
  # weight: a NaN there must still give NaN, not a number, and under vmap (a population
  # of nets, one predicate for all) only for the net that has it.
  x, kernel, bias = _inputs()
  bad = kernel.at[0, 0, 0, 0].set(jnp.nan)
  layer = lambda k: conv_transpose(x, k, bias, 2, (1, 1, 1, 1), "relu")
  assert bool(jnp.all(jnp.isnan(layer(bad))))
  good = layer(kernel)
  assert bool(jnp.all(jnp.isfinite(good)))
  both = jax.jit(jax.vmap(layer))(jnp.stack([kernel, bad]))
  assert bool(jnp.all(jnp.isnan(both[1])))
  np.testing.assert_allclose(np.asarray(both[0]), np.asarray(good), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stride,crop,activation", CASES)
def test_gradients_equal_autodiff(stride, crop, activation):
  x, kernel, bias = _inputs(cin=7, cout=6, side=5)
  cot = jax.random.normal(jax.random.key(9), conv_transpose(x, kernel, bias, stride, crop,
                                                            activation).shape)

  def loss(fn):
    return lambda x, k, b: jnp.sum(fn(x, k, b, stride, crop, activation) * cot)

  ours = jax.grad(loss(conv_transpose), (0, 1, 2))(x, kernel, bias)
  ref = jax.grad(loss(conv_transpose_reference), (0, 1, 2))(x, kernel, bias)
  for a, b, name in zip(ours, ref, ("x", "kernel", "bias")):
    assert a.shape == b.shape and a.dtype == b.dtype, name
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5, err_msg=name)


def test_gradients_under_jit_and_vmap():
  x, kernel, bias = _inputs()
  f = lambda fn: jax.jit(jax.vmap(jax.grad(lambda k, xi: jnp.sum(fn(xi[None], k, bias, 2, (1, 1, 1, 1), "relu") ** 2)),
                                  in_axes=(None, 0)))
  np.testing.assert_allclose(np.asarray(f(conv_transpose)(kernel, x)),
                             np.asarray(f(conv_transpose_reference)(kernel, x)), rtol=2e-5, atol=2e-5)


def test_bfloat16_runs_and_gradients_are_close():
  x, kernel, bias = _inputs()
  cast = lambda *a: [v.astype(jnp.bfloat16) for v in a]
  g16 = jax.grad(lambda k: jnp.sum(conv_transpose(*cast(x), k, *cast(bias), 2, (1, 1, 1, 1), "sigmoid")
                                   .astype(jnp.float32)))(kernel.astype(jnp.bfloat16))
  g32 = jax.grad(lambda k: jnp.sum(conv_transpose(x, k, bias, 2, (1, 1, 1, 1), "sigmoid")))(kernel)
  assert g16.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g16)))
  np.testing.assert_allclose(np.asarray(g16, np.float32), np.asarray(g32), rtol=0.05, atol=0.05)


def _stacked_model_grads(fast_grad: bool, seeds=(0, 1), in_channels=16, width=0.125):
  """Gradients of the batch loss for nets of `seeds`, params stacked and the grad vmapped
  (as a population of nets is trained)."""
  from flax import nnx
  from singleseg_jax.paper.model import Upsampler
  from singleseg_jax.train import matlab_loss
  models = [Upsampler(in_channels, width, fast_grad=fast_grad, rngs=nnx.Rngs(s)) for s in seeds]
  graphdef = nnx.split(models[0], nnx.Param)[0]
  params = jax.tree.map(lambda *a: jnp.stack(a), *[nnx.split(m, nnx.Param)[1] for m in models])
  kx, ky = jax.random.split(jax.random.key(5))
  x = jax.random.uniform(kx, (len(seeds), 4, 10, 10, in_channels))
  y = jax.random.uniform(ky, (len(seeds), 4, 100, 100, 3))
  loss = lambda p, x, y: matlab_loss(nnx.merge(graphdef, p)(x), y)
  return jax.tree.leaves(jax.jit(jax.vmap(jax.grad(loss)))(params, x, y))


def test_model_gradients_equal_stock_under_vmap():
  # Both are float32 sums of the same products in another order (GEMMs against XLA's
  # convolution gradients): they agree to a few float32 roundings of the largest
  # entry (about 3e-6 measured), so 2e-5 of each leaf's largest entry.
  for ours, stock in zip(_stacked_model_grads(True), _stacked_model_grads(False)):
    assert ours.shape == stock.shape and ours.shape[0] == 2
    scale = float(jnp.max(jnp.abs(stock)))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(stock), rtol=0, atol=2e-5 * scale)


@pytest.mark.parametrize("stride,crop,activation", CASES[:4] + [(2, (2, 1, 1, 2), "linear")])
def test_bfloat16_gradients_equal_stock(stride, crop, activation):
  x, kernel, bias = (a.astype(jnp.bfloat16) for a in _inputs(cin=7, cout=6, side=5))
  cot = jax.random.normal(jax.random.key(9), conv_transpose(x, kernel, bias, stride, crop,
                                                            activation).shape, jnp.bfloat16)

  def grads(fn):
    loss = lambda x, k, b: jnp.sum((fn(x, k, b, stride, crop, activation) * cot)
                                   .astype(jnp.float32))
    return [np.asarray(g, np.float64) for g in jax.grad(loss, (0, 1, 2))(x, kernel, bias)]

  ours, stock = grads(conv_transpose), grads(conv_transpose_reference)
  # The input and kernel gradients are float32-accumulated products on both paths,
  # rounded once to bfloat16 (8 significant bits): equal to one rounding, 2^-7 of the
  # largest entry.
  for a, b in zip(ours[:2], stock[:2]):
    np.testing.assert_allclose(a, b, rtol=0, atol=2.0 ** -7 * np.abs(b).max())
  # The bias gradient sums the N*H*W = 432 output-gradient terms: stock autodiff adds
  # them in bfloat16 (up to 2.5% of the largest entry off, measured), the custom VJP in
  # float32 and rounds once. So 5% between the two, and ours is the exact sum rounded.
  np.testing.assert_allclose(ours[2], stock[2], rtol=0, atol=0.05 * np.abs(stock[2]).max())
  if activation == "linear":  # the bias gradient is then exactly the sum of `cot`
    exact = np.asarray(cot, np.float64).sum(axis=(0, 1, 2))
    np.testing.assert_allclose(ours[2], exact, rtol=2.0 ** -8, atol=1e-4 * np.abs(exact).max())


def test_layer_choice_by_backend():
  assert uses_custom_vjp("auto", "cpu") and uses_custom_vjp("custom", "gpu")
  assert not uses_custom_vjp("auto", "gpu") and not uses_custom_vjp("auto", "tpu")
  assert not uses_custom_vjp("stock", "cpu")
  # Winograd is the custom VJP with some passes replaced, on any backend it is asked
  # for, and auto's choice on CPU only.
  assert uses_custom_vjp("winograd", "gpu") and uses_winograd("winograd", "gpu")
  assert uses_winograd("auto", "cpu") and not uses_winograd("custom", "cpu")
  assert not uses_winograd("auto", "gpu") and not uses_winograd("stock", "cpu")
  with pytest.raises(InputError, match="layer must be one of"):
    check_layer("fast")
