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
kernel gradient = X^T T, input gradient = T W^T. The forward pass is one GEMM too
(`tap_sum`): X @ K as (N*H*W, Cin) @ (Cin, 9*Cout), the nine tap planes then added at
their strided offsets in one fused pass, with no multiplications by the stride's
zeros, which XLA:CPU's lhs-dilated convolution does. `tests/test_layers.py` checks
the result against the scatter definition and autodiff.

`layer="winograd"` runs the stride-1 layers' three passes (forward, input gradient,
kernel gradient) as Winograd correlations instead (`winograd.py`, which says where).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from singleseg_jax.errors import InputError
from singleseg_jax.paper import winograd

KERNEL = 3
ACTIVATIONS = ("relu", "sigmoid", "linear")
_DIMS = ("NHWC", "HWIO", "NHWC")


#: How the layers are differentiated (the `layer` config key): "custom" is this module's
#: VJP, "winograd" the same with Winograd passes where `winograd.FORMS` says they win,
#: "stock" plain autodiff of `conv_transpose_reference`, "auto" picks per backend
#: (winograd on CPU, stock elsewhere).
LAYER_CHOICES = ("auto", "custom", "winograd", "stock")


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
  return layer in ("custom", "winograd")


def uses_winograd(layer: str, platform: str | None = None) -> bool:
  """Whether `layer` means the Winograd forms (where `winograd.FORMS` says they win) on
  `platform` (default: JAX's default backend): by name everywhere, and for "auto" on
  CPU, where the train step with them was measured faster (docs/speed.md)."""
  if check_layer(layer) == "auto":
    return (platform or jax.default_backend()) == "cpu"
  return layer == "winograd"


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


def tap_sum(x, kernel, bias, stride: int, crop: Sequence[int], activation: str = "linear"):
  """The layer's forward as one GEMM and one fused pass: the same values as
  `conv_transpose_reference` up to float rounding, and differentiable by autodiff as it.

  Every tap plane P_ab = X @ K[a, b] lands at offset (a, b) with the stride between its
  pixels (`lax.pad` with interior padding), and the nine are summed, cropped, biased and
  activated in one XLA fusion. `conv_transpose` runs it through `_own_buffer`.
  """
  n, h, w, cin = x.shape
  cout = kernel.shape[-1]
  planes = jnp.dot(x.reshape(n * h * w, cin),
                   kernel.transpose(2, 0, 1, 3).reshape(cin, KERNEL * KERNEL * cout),
                   preferred_element_type=jnp.float32)
  # Summed in float32 and rounded once, as the convolution accumulates: in bfloat16 nine
  # rounded planes would move pre-activations across the ReLU's zero.
  planes = planes.reshape(n, h, w, KERNEL, KERNEL, cout)
  gap = stride - 1
  zero = jnp.zeros((), jnp.float32)
  full = sum(lax.pad(planes[:, :, :, a, b], zero,
                     ((0, 0, 0), (a, KERNEL - 1 - a, gap), (b, KERNEL - 1 - b, gap), (0, 0, 0)))
             for a in range(KERNEL) for b in range(KERNEL))
  t, bo, l, r = crop
  bias = jnp.asarray(bias)
  z = full[:, t:full.shape[1] - bo, l:full.shape[2] - r] + bias.astype(jnp.float32)
  # The dtype the convolution form gives: its inputs' and the bias's, promoted.
  dtype = jnp.result_type(x.dtype, kernel.dtype, bias.dtype)
  return _activate(z.astype(dtype), activation)


def _own_buffer(y, kernel):
  """`y` itself, through a `lax.cond` whose operand XLA must materialise once, so that
  every reader reads that buffer instead of recomputing `y` (XLA:CPU strips
  `optimization_barrier` before fusion, and folds a cond on a constant predicate).

  In a train step a layer's output has several readers (the next layer's GEMM, this
  layer's ReLU mask in the backward, the next layer's kernel gradient), and without it
  XLA:CPU duplicated `tap_sum`'s nine-plane sum into each reader and materialised all
  nine padded planes for them, which made the step slower than the convolution's
  (docs/speed.md). Only on CPU, where it was measured: elsewhere a conditional may wait
  for its predicate on the host. Not differentiable (its vmap rule is custom): it is
  used inside the custom VJP only."""
  first = kernel[(0,) * kernel.ndim]
  return lax.platform_dependent(y, first, cpu=_through_cond, default=lambda y, first: y)


@jax.custom_batching.custom_vmap
def _through_cond(y, first):
  """The cond: `y` unless `first` (one weight) is NaN, then all NaN. The predicate has to
  depend on data to survive XLA, and a NaN weight makes the loss NaN anyway."""
  return lax.cond(first == first, lambda v: v, lambda v: jnp.full_like(v, jnp.nan), y)


@_through_cond.def_vmap
def _through_cond_batched(axis_size, in_batched, y, first):
  """Under vmap (a population of nets), one unbatched predicate over all of them, so
  the cond stays a cond (a batched predicate would turn it into a select, which reads
  `y` again); the nets with a NaN first weight are filled with NaN in its other branch."""
  y_batched, first_batched = in_batched
  if not y_batched:
    y = jnp.broadcast_to(y, (axis_size,) + y.shape)
  if not first_batched:
    first = jnp.broadcast_to(first, (axis_size,))
  bad = (first != first).reshape((axis_size,) + (1,) * (y.ndim - 1))
  out = lax.cond(jnp.any(bad), lambda v: jnp.where(bad, jnp.nan, v).astype(v.dtype),
                 lambda v: v, y)
  return out, True


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def conv_transpose(x, kernel, bias, stride: int, crop: tuple[int, int, int, int],
                   activation: str = "linear"):
  """act(cropped transposed convolution + bias); x (N,H,W,Cin), kernel (3,3,Cin,Cout)."""
  return _fwd(x, kernel, bias, stride, crop, activation)[0]


def _fwd(x, kernel, bias, stride, crop, activation):
  y = _own_buffer(tap_sum(x, kernel, bias, stride, crop, activation), kernel)
  return y, (x, kernel, y)


def _output_grad(g, y, crop, activation):
  """(gradient wrt the pre-activation, cropped; the same uncropped; the bias gradient)."""
  t, b, l, r = crop
  gz = g * _activation_grad(y, activation)
  dbias = jnp.sum(gz, axis=(0, 1, 2), dtype=jnp.float32).astype(gz.dtype)
  return gz, jnp.pad(gz, ((0, 0), (t, b), (l, r), (0, 0))), dbias


def _bwd(stride, crop, activation, residuals, g):
  x, kernel, y = residuals
  n, h, w, cin = x.shape
  cout = kernel.shape[-1]
  _, g_full, dbias = _output_grad(g, y, crop, activation)
  taps = _taps(g_full, stride, h, w)                        # (N*h*w, 9*Cout)
  x2 = x.reshape(n * h * w, cin)
  dkernel = jnp.dot(x2.T, taps, preferred_element_type=jnp.float32)  # (Cin, 9*Cout)
  dkernel = dkernel.reshape(cin, KERNEL, KERNEL, cout).transpose(1, 2, 0, 3)
  w_t = kernel.transpose(0, 1, 3, 2).reshape(KERNEL * KERNEL * cout, cin)
  dx = jnp.dot(taps, w_t, preferred_element_type=jnp.float32).reshape(n, h, w, cin)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype), dbias


conv_transpose.defvjp(_fwd, _bwd)


def _padded(x, crop):
  """x with the full convolution's border, less the crop: the stride-1 layer is then
  the VALID correlation of this with the flipped kernel."""
  pad = KERNEL - 1
  t, b, l, r = crop
  if max(crop) > pad:
    raise ValueError(f"a stride-1 layer crops at most {pad} per side, got {crop}")
  return jnp.pad(x, ((0, 0), (pad - t, pad - b), (pad - l, pad - r), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def conv_transpose_winograd(x, kernel, bias, crop: tuple[int, int, int, int],
                            activation: str = "linear", tile: int = 4):
  """The stride-1 `conv_transpose`, its three passes by Winograd F(tile x tile, 3x3)."""
  return _winograd_fwd(x, kernel, bias, crop, activation, tile)[0]


def _winograd_fwd(x, kernel, bias, crop, activation, tile):
  z, tiles = winograd.correlate(_padded(x, crop), kernel[::-1, ::-1], tile)
  y = _activate(z + bias, activation)
  # The input's transformed tiles are kept for the kernel gradient: recomputing them
  # would cost another pass over memory and compile time.
  return y, (tiles, kernel, y)


def _winograd_bwd(crop, activation, tile, residuals, g):
  tiles, kernel, y = residuals
  gz, g_full, dbias = _output_grad(g, y, crop, activation)
  # dx[i, j] = sum_ab g_full[i+a, j+b] K[a, b]^T and dK~[a, b] = sum_pq x~[p+a, q+b]^T gz[p, q]
  # (x~ the padded input, K~ the flipped kernel): both again 3x3 correlations.
  dx = winograd.correlate(g_full, kernel.transpose(0, 1, 3, 2), tile)[0]
  dkernel = winograd.correlate_kernel_grad(tiles, gz, tile)[::-1, ::-1]
  return dx.astype(y.dtype), dkernel.astype(kernel.dtype), dbias


conv_transpose_winograd.defvjp(_winograd_fwd, _winograd_bwd)


class ConvTranspose(nnx.Module):
  """One seed layer: 3x3 transposed convolution, stride, MATLAB crop, activation.

  Weights are initialised as MATLAB does: Glorot uniform over fan-in 9*Cin and
  fan-out 9*Cout, bias zero. `dtype` is the compute dtype (params stay float32).
  `winograd=True` (with `fast_grad`) runs the layer in the form `winograd.form_for` picks.
  """

  def __init__(self, in_features: int, out_features: int, *, stride: int = 1,
               crop: tuple[int, int, int, int] = (0, 0, 0, 0), activation: str = "relu",
               dtype=jnp.float32, fast_grad: bool = True, winograd: bool = False,
               rngs: nnx.Rngs):
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
    self.winograd = winograd and fast_grad

  def __call__(self, x):
    kernel = self.kernel[...].astype(self.dtype)
    bias = self.bias[...].astype(self.dtype)
    x = x.astype(self.dtype)
    form = (winograd.form_for(self.stride, x.shape[1], self.dtype, *kernel.shape[2:])
            if self.winograd else "custom")
    if form != "custom":
      return conv_transpose_winograd(x, kernel, bias, self.crop, self.activation,
                                     winograd.tile_of(form))
    fn = conv_transpose if self.fast_grad else conv_transpose_reference
    return fn(x, kernel, bias, self.stride, self.crop, self.activation)
