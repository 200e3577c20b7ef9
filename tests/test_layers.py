"""The fast ConvTranspose: forward against a direct scatter loop, gradients against autodiff."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from singleseg_jax.paper.layers import conv_transpose, conv_transpose_reference, output_size
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


@pytest.mark.parametrize("stride,crop", [(s, c) for _, s, c in LAYERS])
def test_forward_matches_scatter_definition(stride, crop):
  x, kernel, bias = _inputs()
  out = conv_transpose(x, kernel, bias, stride, crop, "linear")
  ref = scatter_reference(np.asarray(x, np.float64), np.asarray(kernel, np.float64),
                          np.asarray(bias, np.float64), stride, crop)
  assert out.shape == ref.shape
  assert out.shape[1] == output_size(6, stride, crop[:2])
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5)


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
