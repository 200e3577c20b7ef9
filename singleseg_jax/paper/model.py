"""The seed's network, built for any output side: transposed convolutions from the
thumbnail to the image.

The seed's net maps 10x10 to 100x100 with six 3x3 transposed convolutions, strides
1, 2, 1, 2, 1, 2. `layer_table(size, scale)` derives the same pattern for other sides
(`size` the output, `thumbnail_size(size, scale)` the input) and gives exactly the
seed's table at 100 and 0.1. A 3x3 layer maps a side n to n + 2 at stride 1 and to
2n + 1 at stride 2, before its crop. The rule:

- D = floor(log2(size / thumbnail)) stride-2 layers: the doublings.
- k >= 1 stride-1 layers at the thumbnail's side, as few as make the uncropped output
  reach `size`: the cheapest place to grow, since each of their +2 is doubled D times
  (the seed: k = 1, 10 -> 12 -> ... -> 115 uncropped). Then (stride 2, stride 1) x
  (D - 1), then the last stride 2.
- The excess (uncropped - size) is cropped, each pixel of crop removing as many
  output pixels as the strides after it double it. Crops are at most 2 per axis (3
  at the last layer, as the seed's) and as large as possible in this order, each as
  large as still lets the later ones remove the rest exactly: first the stride-2
  layers (the seed's 2, 2, 3 at 100), then, only where those cannot do it alone
  (small thumbnails, odd sides), the stride-1 layers (2 is a "same" layer). A
  crop c is split per axis as the seed splits its 3, (top 2, bottom 1, left 1,
  right 2): floor(c/2) on both sides and the odd pixel at the top and the right.
- Widths: the k leading layers at 256 (x width), then 128, 64, ... (halving, at least
  8), then 8 before the 3-channel output: for D = 3 the seed's 128, 64, 32, 8, 3.

A pair whose excess the crops cannot remove, or with no doubling (scale > 1/2), is
an InputError.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from singleseg_jax import image as image_lib
from singleseg_jax.errors import InputError
from singleseg_jax.paper import winograd
from singleseg_jax.paper.layers import KERNEL, ConvTranspose, output_size

#: The seed's sides: the 100x100 image and its 0.1 thumbnail (10x10).
PAPER_SIZE, PAPER_SCALE = 100, 0.1
OUTPUT_CHANNELS = 3
#: Compute dtypes by config name.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Widths at width 1: the leading stride-1 layers, the first of the rest (halved per
# layer down to _MIN_HIDDEN) and the one before the output, as in the seed.
_LEAD_WIDTH, _FIRST_WIDTH, _MIN_HIDDEN = 256, 128, 8
_MAX_CROP, _MAX_LAST_CROP = KERNEL - 1, KERNEL  # per axis; the seed's last layer crops 3


class Layer(NamedTuple):
  """One transposed convolution: hidden width at width 1, stride, crop (t, b, l, r)."""
  width: int
  stride: int
  crop: tuple[int, int, int, int]


def _split(c: int) -> tuple[int, int, int, int]:
  """A crop of c per axis as (top, bottom, left, right), split as the seed splits 3."""
  return (c - c // 2, c // 2, c // 2, c - c // 2)


@functools.lru_cache(maxsize=64)
def layer_table(size: int = PAPER_SIZE, scale: float = PAPER_SCALE) -> tuple[Layer, ...]:
  """The net from the `scale` thumbnail of a `size` image to the image (module doc)."""
  if not isinstance(size, int) or isinstance(size, bool) or size < 2:
    raise InputError(f"size must be an integer >= 2, got {size!r}")
  if not isinstance(scale, (int, float)) or isinstance(scale, bool):
    raise InputError(f"scale must be a number in (0, 1], got {scale!r}")
  thumb = image_lib.thumbnail_size(size, scale)
  doublings = (size // thumb).bit_length() - 1
  if doublings < 1:
    raise InputError(f"no net maps a {thumb}x{thumb} thumbnail to {size}x{size}: the "
                     f"thumbnail must be at most half the side (scale <= 0.5), got {scale!r}")

  def strides(k):
    return [1] * k + [2, 1] * (doublings - 1) + [2]

  def uncropped(k):
    side = thumb
    for s in strides(k):
      side = output_size(side, s, (0, 0))
    return side

  k = 1
  while uncropped(k) < size:
    k += 1
  layers = strides(k)
  # Output pixels one pixel of crop at layer i removes: the doublings after it.
  weight = [2 ** layers[i + 1:].count(2) for i in range(len(layers))]
  cap = [_MAX_CROP] * (len(layers) - 1) + [_MAX_LAST_CROP]
  order = [i for i, s in enumerate(layers) if s == 2] + [i for i, s in enumerate(layers) if s == 1]

  def reachable(positions):  # every excess the crops at `positions` can remove together
    sums = {0}
    for i in positions:
      sums = {t + c * weight[i] for t in sums for c in range(cap[i] + 1)}
    return sums

  crops, excess = [0] * len(layers), uncropped(k) - size
  for j, i in enumerate(order):
    rest = reachable(order[j + 1:])
    fits = [c for c in range(cap[i] + 1) if excess - c * weight[i] in rest]
    if not fits:
      raise InputError(f"no net of this pattern maps {thumb}x{thumb} to {size}x{size} "
                       f"(size {size}, scale {scale!r}): the crops cannot remove "
                       f"{excess} pixels")
    crops[i] = max(fits)
    excess -= crops[i] * weight[i]
  rest = 2 * doublings - 1  # the layers after the leading ones, the output included
  hidden = [max(_MIN_HIDDEN, _FIRST_WIDTH >> i) for i in range(rest - 2)] + \
      [_MIN_HIDDEN] * (rest > 1)
  widths = [_LEAD_WIDTH] * k + hidden + [OUTPUT_CHANNELS]
  return tuple(Layer(w, s, _split(c)) for w, s, c in zip(widths, layers, crops))


#: The seed's table (`train_network.m`): sides 10 -> 12 -> 23 -> 25 -> 49 -> 51 -> 100.
LAYERS = layer_table()


def layer_widths(width: float, size: int = PAPER_SIZE,
                 scale: float = PAPER_SCALE) -> tuple[int, ...]:
  """Output channels of each layer: hidden ones scaled by `width`, the last stays 3."""
  if not isinstance(width, (int, float)) or not width > 0:
    raise InputError(f"width must be a positive number, got {width!r}")
  hidden = [max(1, int(round(l.width * width))) for l in layer_table(size, scale)[:-1]]
  return tuple(hidden) + (OUTPUT_CHANNELS,)


def layer_sides(size: int = PAPER_SIZE, scale: float = PAPER_SCALE) -> tuple[int, ...]:
  """Spatial side of the input and after each layer: the thumbnail's, ..., `size`."""
  sides = [image_lib.thumbnail_size(size, scale)]
  for _, stride, (t, b, l, r) in layer_table(size, scale):
    h, w = output_size(sides[-1], stride, (t, b)), output_size(sides[-1], stride, (l, r))
    if h != w:
      raise AssertionError("the crops keep the maps square")
    sides.append(h)
  return tuple(sides)


def flops_per_sample(in_channels: int, width: float = 1.0, size: int = PAPER_SIZE,
                     scale: float = PAPER_SCALE) -> int:
  """Multiply-adds x 2 of one forward pass (every input pixel meets 9 kernel taps)."""
  total, cin = 0, in_channels
  sides = layer_sides(size, scale)
  for cout, side in zip(layer_widths(width, size, scale), sides):
    total += 2 * side * side * cin * cout * KERNEL * KERNEL
    cin = cout
  return total


def backward_bytes_per_sample(in_channels: int, width: float = 1.0, size: int = PAPER_SIZE,
                               scale: float = PAPER_SCALE) -> int:
  """Bytes per sample (float32) the backward pass keeps live at its widest: every layer's
  output (the forward's residuals) plus the largest tap matrix (`layers._taps`: 9 x Cout
  per input pixel)."""
  sides, widths = layer_sides(size, scale), layer_widths(width, size, scale)
  outputs = sum(s * s * c for s, c in zip(sides[1:], widths))
  taps = max(s * s * KERNEL * KERNEL * c for s, c in zip(sides[:-1], widths))
  return 4 * (outputs + taps)


def winograd_forms(in_channels: int, width: float = 1.0, size: int = PAPER_SIZE,
                   scale: float = PAPER_SCALE, dtype=jnp.float32) -> tuple[str, ...]:
  """The form each layer runs as under `layer="winograd"` (`winograd.form_for`, as
  `ConvTranspose` asks it): "custom" for the layers that keep the tap-GEMM VJP."""
  forms, cin = [], in_channels
  for (_, stride, _), side, cout in zip(layer_table(size, scale), layer_sides(size, scale),
                                        layer_widths(width, size, scale)):
    forms.append(winograd.form_for(stride, side, dtype, cin, cout))
    cin = cout
  return tuple(forms)


class Upsampler(nnx.Module):
  """Thumbnail x in_channels -> size x size x 3 in [0, 1] (ReLU between layers,
  sigmoid last), the layers of `layer_table(size, scale)`.

  `in_channels=256, width=1` at the default 100 and 0.1 is the cat/dog net (979,907
  parameters); `in_channels=512, width=2` is the wider car net. `dtype` is the
  compute dtype. `fast_grad=False` uses plain autodiff (the reference the tests
  compare against); `winograd=True` the Winograd forms where `paper.winograd.form_for`
  says they win (FORMS, wide layers only).
  """

  def __init__(self, in_channels: int = 256, width: float = 1.0, *, size: int = PAPER_SIZE,
               scale: float = PAPER_SCALE, dtype=jnp.float32, fast_grad: bool = True,
               winograd: bool = False, rngs: nnx.Rngs):
    if not isinstance(in_channels, int) or in_channels < 1:
      raise InputError(f"in_channels must be a positive integer, got {in_channels!r}")
    self.in_channels = in_channels
    table = layer_table(size, scale)
    self.input_side, self.output_side = image_lib.thumbnail_size(size, scale), size
    layers, cin = [], in_channels
    for i, ((_, stride, crop), cout) in enumerate(zip(table, layer_widths(width, size, scale))):
      act = "sigmoid" if i == len(table) - 1 else "relu"
      layers.append(ConvTranspose(cin, cout, stride=stride, crop=crop, activation=act,
                                  dtype=dtype, fast_grad=fast_grad, winograd=winograd,
                                  rngs=rngs))
      cin = cout
    self.layers = nnx.List(layers)

  def __call__(self, x):
    s = self.input_side
    if x.ndim != 4 or x.shape[1:] != (s, s, self.in_channels):
      raise InputError(f"network input must be (N, {s}, {s}, {self.in_channels}), "
                       f"got {x.shape}")
    for layer in self.layers:
      x = layer(x)
    return x.astype(jnp.float32)


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters."""
  return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
