"""MATLAB's `transposedConv2dLayer` (kernel 3) fused with its activation, fast on CPU.

Semantics (the "scatter" definition, as MATLAB and PyTorch): every input pixel (i, j)
adds `x[i, j] @ K[a, b]` to output pixel (s*i + a, s*j + b) for the 3x3 taps (a, b);
the full output of side (n-1)*s + 3 is then cropped by (top, bottom, left, right) and
the bias and activation are applied.

Why a custom VJP: autodiff of a strided transposed convolution asks XLA for the kernel
gradient of an lhs-dilated convolution, which XLA:CPU runs through a slow generic path
(the README has the measured gap). Here the backward pass gathers the
nine strided taps of the (uncropped) output gradient once into a matrix
T = (N*H*W, 9*Cout) and gets both gradients as plain GEMMs:
kernel gradient = X^T T, input gradient = T W^T. The forward pass is the ordinary
convolution of the stride-dilated input with the flipped kernel, with the crop folded
into the padding. `tests/test_layers.py` checks the result against autodiff.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from singleseg_jax.errors import InputError

KERNEL = 3
ACTIVATIONS = ("relu", "sigmoid", "linear")
_DIMS = ("NHWC", "HWIO", "NHWC")


#: How the layers are differentiated (the `layer` config key): "custom" is this module's
#: VJP, "stock" plain autodiff of `conv_transpose_reference`, "auto" picks per backend.
LAYER_CHOICES = ("auto", "custom", "stock")


def check_layer(layer: str) -> str:
  """`layer` itself when it is one of LAYER_CHOICES; InputError naming them otherwise."""
  if layer not in LAYER_CHOICES:
    raise InputError(f"layer must be one of {LAYER_CHOICES}, got {layer!r}")
  return layer


def uses_custom_vjp(layer: str, platform: str | None = None) -> bool:
  """Whether `layer` means the custom VJP on `platform` (default: JAX's default backend)."""
  if check_layer(layer) == "auto":
    # The custom VJP exists for XLA:CPU's slow strided-transposed-convolution gradient;
    # on other backends the convolution gradients are the backend's own, with no 9x tap
    # copy, so they are used there.
    return (platform or jax.default_backend()) == "cpu"
  return layer == "custom"


def output_size(n: int, stride: int, crop: tuple[int, int]) -> int:
  """Side after the layer: (n - 1) * stride + 3 - crop_before - crop_after."""
  return (n - 1) * stride + KERNEL - crop[0] - crop[1]


def _activate(z, activation):
  if activation == "relu":
    return jax.nn.relu(z)
  if activation == "sigmoid":
    return jax.nn.sigmoid(z)
  return z


def _activation_grad(y, activation):
  """d act / d z, written in terms of the output y = act(z)."""
  if activation == "relu":
    return (y > 0).astype(y.dtype)
  if activation == "sigmoid":
    return y * (1 - y)
  return jnp.ones_like(y)


def conv_transpose_reference(x, kernel, bias, stride: int, crop: Sequence[int],
                             activation: str = "linear"):
  """The same layer with no custom gradient: what autodiff differentiates."""
  t, b, l, r = crop
  pad = KERNEL - 1
  z = lax.conv_general_dilated(
      x, kernel[::-1, ::-1], window_strides=(1, 1),
      padding=((pad - t, pad - b), (pad - l, pad - r)),
      lhs_dilation=(stride, stride), dimension_numbers=_DIMS)
  return _activate(z + bias, activation)


def _taps(g_full, stride: int, h: int, w: int):
  """Gathers g_full[n, s*i + a, s*j + b, o] into (N*h*w, 9*Cout), tap-major.

  In two passes (the three column taps, then the three row taps of those), each one
  XLA fusion: half the memory traffic of stacking nine strided slices."""
  n, _, _, c = g_full.shape
  span_h, span_w = stride * (h - 1) + 1, stride * (w - 1) + 1
  cols = jnp.concatenate([g_full[:, :, b:b + span_w:stride] for b in range(KERNEL)], axis=-1)
  taps = jnp.stack([cols[:, a:a + span_h:stride] for a in range(KERNEL)], axis=3)
  return taps.reshape(n * h * w, KERNEL * KERNEL * c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def conv_transpose(x, kernel, bias, stride: int, crop: tuple[int, int, int, int],
                   activation: str = "linear"):
  """act(cropped transposed convolution + bias); x (N,H,W,Cin), kernel (3,3,Cin,Cout)."""
  return conv_transpose_reference(x, kernel, bias, stride, crop, activation)


def _fwd(x, kernel, bias, stride, crop, activation):
  y = conv_transpose_reference(x, kernel, bias, stride, crop, activation)
  return y, (x, kernel, y)


def _bwd(stride, crop, activation, residuals, g):
  x, kernel, y = residuals
  t, b, l, r = crop
  n, h, w, cin = x.shape
  cout = kernel.shape[-1]
  gz = g * _activation_grad(y, activation)
  g_full = jnp.pad(gz, ((0, 0), (t, b), (l, r), (0, 0)))
  taps = _taps(g_full, stride, h, w)                        # (N*h*w, 9*Cout)
  x2 = x.reshape(n * h * w, cin)
  dkernel = jnp.dot(x2.T, taps, preferred_element_type=jnp.float32)  # (Cin, 9*Cout)
  dkernel = dkernel.reshape(cin, KERNEL, KERNEL, cout).transpose(1, 2, 0, 3)
  w_t = kernel.transpose(0, 1, 3, 2).reshape(KERNEL * KERNEL * cout, cin)
  dx = jnp.dot(taps, w_t, preferred_element_type=jnp.float32).reshape(n, h, w, cin)
  dbias = jnp.sum(gz, axis=(0, 1, 2), dtype=jnp.float32).astype(gz.dtype)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype), dbias


conv_transpose.defvjp(_fwd, _bwd)


class ConvTranspose(nnx.Module):
  """One seed layer: 3x3 transposed convolution, stride, MATLAB crop, activation.

  Weights are initialised as MATLAB does: Glorot uniform over fan-in 9*Cin and
  fan-out 9*Cout, bias zero. `dtype` is the compute dtype (params stay float32).
  """

  def __init__(self, in_features: int, out_features: int, *, stride: int = 1,
               crop: tuple[int, int, int, int] = (0, 0, 0, 0), activation: str = "relu",
               dtype=jnp.float32, fast_grad: bool = True, rngs: nnx.Rngs):
    if activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    init = jax.nn.initializers.glorot_uniform()  # fans: 9*Cin and 9*Cout
    self.kernel = nnx.Param(init(rngs.params(), (KERNEL, KERNEL, in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))
    self.stride = stride
    self.crop = tuple(crop)
    self.activation = activation
    self.dtype = dtype
    self.fast_grad = fast_grad

  def __call__(self, x):
    fn = conv_transpose if self.fast_grad else conv_transpose_reference
    kernel = self.kernel[...].astype(self.dtype)
    bias = self.bias[...].astype(self.dtype)
    return fn(x.astype(self.dtype), kernel, bias, self.stride, self.crop, self.activation)
