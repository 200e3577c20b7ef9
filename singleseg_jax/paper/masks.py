"""Random training masks: the seed's `get_mask.m`, as a pure jit/vmap-able function.

With probability 1/2 a rectangle, else a disc, with MATLAB's ranges exactly. In the
seed's 1-based terms, for an image of `h` x `w` pixels:

* rectangle: corner `y ~ randi(r(3h/4))`, `x ~ randi(r(3w/4))`; extent
  `dh ~ randi([r(3(h-y)/4), h-y])` (0 if y == h), likewise `dw`; rows `y..y+dh` and
  columns `x..x+dw` inclusive are kept (so at least `dh+1` rows).
* disc: centre `yc ~ randi([r(h/4), r(3h/4)])`, `xc` likewise; `d = min(xc, w-xc, yc,
  h-yc)`; radius `~ randi([r(3d/4), d])`; pixel (i, j) is kept when
  `(i-yc)^2 + (j-xc)^2 < radius^2` (strict).

`randi` is uniform over its inclusive range and `r` is MATLAB's `int8()` rounding:
half away from zero. Every range is a fraction of the side, so at other sizes
(`config.size`) the masks are the seed's scaled: MATLAB's int8 would saturate at 127,
which only matters for sides above 169 pixels (the seed always samples at 100x100), and
we do not saturate.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from singleseg_jax.errors import InputError


def _round(x):
  """MATLAB int8() rounding for non-negative values: half away from zero."""
  return jnp.floor(x + 0.5).astype(jnp.int32)


def _randi(key, lo, hi):
  """Uniform integer in [lo, hi] inclusive (MATLAB randi([lo hi]))."""
  return jax.random.randint(key, (), lo, hi + 1, dtype=jnp.int32)


def _static_round(x: float) -> int:
  return int(x + 0.5)


def _rectangle(key, h: int, w: int):
  ky, kx, kh, kw = jax.random.split(key, 4)
  y = _randi(ky, 1, _static_round(h * 3 / 4))
  x = _randi(kx, 1, _static_round(w * 3 / 4))
  dh = jnp.where(y != h, _randi(kh, _round((h - y) * 0.75), h - y), 0)
  dw = jnp.where(x != w, _randi(kw, _round((w - x) * 0.75), w - x), 0)
  rows = jnp.arange(1, h + 1)[:, None]
  cols = jnp.arange(1, w + 1)[None, :]
  return (rows >= y) & (rows <= y + dh) & (cols >= x) & (cols <= x + dw)


def _disc(key, h: int, w: int):
  ky, kx, kr = jax.random.split(key, 3)
  yc = _randi(ky, _static_round(h / 4), _static_round(h * 3 / 4))
  xc = _randi(kx, _static_round(w / 4), _static_round(w * 3 / 4))
  d = jnp.minimum(jnp.minimum(xc, w - xc), jnp.minimum(yc, h - yc))
  radius = _randi(kr, _round(d * 0.75), d)
  rows = jnp.arange(1, h + 1)[:, None] - yc
  cols = jnp.arange(1, w + 1)[None, :] - xc
  return rows * rows + cols * cols < radius * radius


def sample_mask(key: jax.Array, height: int, width: int) -> jax.Array:
  """One random training mask, bool (height, width); `height`/`width` are static."""
  if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
    raise InputError(f"mask size must be positive integers, got {height!r}x{width!r}")
  kind_key, rect_key, disc_key = jax.random.split(key, 3)
  is_rect = jax.random.bernoulli(kind_key, 0.5)
  return jnp.where(is_rect, _rectangle(rect_key, height, width), _disc(disc_key, height, width))


def sample_masks(key: jax.Array, num: int, height: int, width: int) -> jax.Array:
  """`num` independent masks, bool (num, height, width)."""
  return jax.vmap(lambda k: sample_mask(k, height, width))(jax.random.split(key, num))
