"""The `snap` variant's net: a small encoder-decoder from (image, outline) to a mask.

Input per pixel, at the image's own resolution (100x100 by default): the RGB image in
[0, 1], the outline (0/1) and the outline's signed distance / `SDF_SCALE` (so a pixel
far from the outline knows how far it is). Output: one mask logit per pixel.

A U-Net: at each of `len(widths)` levels two 3x3 convolutions (ReLU), 2x2 max pooling
down, nearest 2x upsampling back with the skip connection concatenated. Only stride-1
convolutions, so XLA:CPU's slow strided-transpose gradient never appears. Any side
works (pooling pads odd sides; upsampling crops back to the skip's side).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from singleseg_jax.errors import InputError
from singleseg_jax.regions import signed_distance

IN_FEATURES = 5
SDF_SCALE = 16.0


def snap_features(image, outline):
  """(..., S, S, 5) float32 net input from an image of 0..255 levels and outline masks."""
  image = jnp.asarray(image, jnp.float32) / 255.0
  outline = jnp.asarray(outline, bool)
  sdf_fn = lambda m: signed_distance(m, int(SDF_SCALE))
  for _ in range(outline.ndim - 2):
    sdf_fn = jax.vmap(sdf_fn)
  sdf = sdf_fn(outline) / SDF_SCALE
  image = jnp.broadcast_to(image, outline.shape + (3,))
  return jnp.concatenate([image, outline[..., None].astype(jnp.float32), sdf[..., None]], -1)


class _Block(nnx.Module):
  def __init__(self, cin, cout, *, dtype, rngs):
    self.a = nnx.Conv(cin, cout, (3, 3), dtype=dtype, rngs=rngs)
    self.b = nnx.Conv(cout, cout, (3, 3), dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return jax.nn.relu(self.b(jax.nn.relu(self.a(x))))


def _pool(x):
  h, w = x.shape[1:3]
  x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
  return nnx.max_pool(x, (2, 2), (2, 2))


def _up(x, like):
  x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  return x[:, :like.shape[1], :like.shape[2]]


class SnapNet(nnx.Module):
  """(N, S, S, 5) features -> (N, S, S) mask logits."""

  def __init__(self, widths=(16, 32, 64, 64), *, dtype=jnp.float32, rngs: nnx.Rngs):
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2 or min(widths) < 1:
      raise InputError(f"snap widths must be >= 2 positive integers, got {widths!r}")
    self.widths = widths
    down, cin = [], IN_FEATURES
    for w in widths:
      down.append(_Block(cin, w, dtype=dtype, rngs=rngs))
      cin = w
    up = []
    for w in reversed(widths[:-1]):
      up.append(_Block(cin + w, w, dtype=dtype, rngs=rngs))
      cin = w
    self.down, self.up = nnx.List(down), nnx.List(up)
    self.head = nnx.Conv(cin, 1, (1, 1), dtype=dtype, rngs=rngs)

  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] != IN_FEATURES:
      raise InputError(f"snap input must be (N, S, S, {IN_FEATURES}), got {x.shape}")
    skips = []
    for i, block in enumerate(self.down):
      x = block(x if i == 0 else _pool(x))
      skips.append(x)
    for block, skip in zip(self.up, reversed(skips[:-1])):
      x = block(jnp.concatenate([_up(x, skip), skip], -1))
    return self.head(x)[..., 0].astype(jnp.float32)
