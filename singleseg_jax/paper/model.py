"""The seed's network: six transposed convolutions from a 10x10 input to 100x100 RGB."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from singleseg_jax.errors import InputError
from singleseg_jax.paper.layers import ConvTranspose, output_size

#: (hidden width at width=1, stride, crop (top, bottom, left, right)) per layer, as in
#: `train_network.m`; spatial sides 10 -> 12 -> 23 -> 25 -> 49 -> 51 -> 100.
LAYERS = (
    (256, 1, (0, 0, 0, 0)),
    (128, 2, (1, 1, 1, 1)),
    (64, 1, (0, 0, 0, 0)),
    (32, 2, (1, 1, 1, 1)),
    (8, 1, (0, 0, 0, 0)),
    (3, 2, (2, 1, 1, 2)),
)
INPUT_SIDE = 10
OUTPUT_CHANNELS = 3
#: Compute dtypes by config name.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def layer_widths(width: float) -> tuple[int, ...]:
  """Output channels of each layer: hidden ones scaled by `width`, the last stays 3."""
  if not isinstance(width, (int, float)) or not width > 0:
    raise InputError(f"width must be a positive number, got {width!r}")
  hidden = [max(1, int(round(c * width))) for c, _, _ in LAYERS[:-1]]
  return tuple(hidden) + (OUTPUT_CHANNELS,)


def layer_sides(side: int = INPUT_SIDE) -> tuple[int, ...]:
  """Spatial side after each layer, starting from `side`."""
  sides = [side]
  for _, stride, crop in LAYERS:
    t, b, l, r = crop
    h, w = output_size(sides[-1], stride, (t, b)), output_size(sides[-1], stride, (l, r))
    if h != w:
      raise AssertionError("the seed's crops keep the maps square")
    sides.append(h)
  return tuple(sides)


#: The side of the net's answer (and of the image it is fitted to): 100.
OUTPUT_SIDE = layer_sides()[-1]


def flops_per_sample(in_channels: int, width: float = 1.0, side: int = INPUT_SIDE) -> int:
  """Multiply-adds x 2 of one forward pass (every input pixel meets 9 kernel taps)."""
  total, cin = 0, in_channels
  for (cout, sides) in zip(layer_widths(width), zip(layer_sides(side), layer_sides(side)[1:])):
    total += 2 * sides[0] * sides[0] * cin * cout * 9
    cin = cout
  return total


class Upsampler(nnx.Module):
  """10x10 x in_channels -> 100x100 x 3 in [0, 1] (ReLU between layers, sigmoid last).

  `in_channels=256, width=1` is the cat/dog net (979,907 parameters);
  `in_channels=512, width=2` is the wider car net. `dtype` is the compute dtype.
  `fast_grad=False` uses plain autodiff (the reference the tests compare against);
  `winograd=True` the Winograd forms where `paper.winograd.FORMS` says they win.
  """

  def __init__(self, in_channels: int = 256, width: float = 1.0, *, dtype=jnp.float32,
               fast_grad: bool = True, winograd: bool = False, rngs: nnx.Rngs):
    if not isinstance(in_channels, int) or in_channels < 1:
      raise InputError(f"in_channels must be a positive integer, got {in_channels!r}")
    self.in_channels = in_channels
    layers, cin = [], in_channels
    widths = layer_widths(width)
    for i, ((_, stride, crop), cout) in enumerate(zip(LAYERS, widths)):
      act = "sigmoid" if i == len(LAYERS) - 1 else "relu"
      layers.append(ConvTranspose(cin, cout, stride=stride, crop=crop, activation=act,
                                  dtype=dtype, fast_grad=fast_grad, winograd=winograd,
                                  rngs=rngs))
      cin = cout
    self.layers = nnx.List(layers)

  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise InputError(f"network input must be (N, H, W, {self.in_channels}), got {x.shape}")
    for layer in self.layers:
      x = layer(x)
    return x.astype(jnp.float32)


def count_params(model: nnx.Module) -> int:
  """Number of trainable parameters."""
  return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
