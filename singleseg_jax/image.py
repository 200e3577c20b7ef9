"""Image preparation as in the seed: square crop, 100x100 image, 10x10 thumbnail.

Resizing reproduces MATLAB's `imresize` default exactly: bicubic (Keys, a = -0.5),
antialiased when shrinking (the kernel is stretched by 1/scale), mirrored borders
(`[1:n, n:-1:1]` index folding) and, for uint8 images, rounding to uint8 at the end.
Each axis's resize is one matrix (`resize_matrix`), so a whole batch of images is
resized by two small matmuls, inside jit or out of it.

Images travel as uint8 arrays of shape (H, W, 3) outside the library's maths; the
functions that run under jit take float arrays holding the same 0..255 levels.
"""
from __future__ import annotations

import functools
import os
import struct
import warnings
import zlib
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from singleseg_jax.errors import InputError

#: `rgb2gray` weights (MATLAB's exact inverse-NTSC row; ITU-R BT.601 luma).
GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)
#: Smallest square side we accept: the 10x10 thumbnail needs at least 10 pixels.
MIN_SIDE = 10
CROPS = ("top_left", "center")


class PreparedImage(NamedTuple):
  """The seed's two views of one photo (both uint8, RGB)."""
  image: np.ndarray      # (size, size, 3): the square crop resized, e.g. 100x100
  thumbnail: np.ndarray  # (size*scale, size*scale, 3): its resize, e.g. 10x10
  crop_box: tuple[int, int, int]  # (top, left, side) of the square in the original


#: The largest photo accepted (pixels): far above any camera's, far below what would
#: exhaust memory when decoded (Pillow's own guard stops at twice its warning level).
MAX_PIXELS = 120_000_000

#: Channels per PNG colour type (IHDR), for the row-count check.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_rows_missing(path: str) -> bool:
  """Whether a PNG's image data holds fewer rows than its header declares.

  Pillow fills the missing rows with zeros without a word, so a photo cut short would
  train on black: the decompressed IDAT stream must be as long as the header implies.
  """
  with open(path, "rb") as f:
    data = f.read()
  if data[:8] != b"\x89PNG\r\n\x1a\n":
    return False
  pos, idat, header = 8, [], None
  while pos + 8 <= len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
      header = struct.unpack(">IIBBBBB", body[:13])
    elif kind == b"IDAT":
      idat.append(body)
    pos += 12 + length
  if header is None:
    return False
  width, height, depth, colour, _, _, interlace = header
  bits = depth * _PNG_CHANNELS.get(colour, 4)
  if interlace:  # Adam7: seven sub-images, each with its own rows
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
              (1, 0, 2, 2), (0, 1, 1, 2))
    sizes = [(-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in passes]
  else:
    sizes = [(width, height)]
  expected = sum(h * (1 + -(-w * bits // 8)) for w, h in sizes if w > 0 and h > 0)
  try:
    got = len(zlib.decompressobj().decompress(b"".join(idat)))
  except zlib.error:
    return True
  return got < expected


def _to_uint8(im: Image.Image) -> Image.Image:
  """8-bit RGB of any Pillow mode: 16-bit and 32-bit greyscale are scaled to 0..255
  (Pillow's own conversion clips them, so a 16-bit photo would turn white)."""
  if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
    levels = np.asarray(im, np.float64) / 257.0
  elif im.mode in ("I", "F"):
    a = np.asarray(im, np.float64)
    top = 65535.0 if im.mode == "I" and a.max() > 255 else 255.0
    top = 1.0 if im.mode == "F" and a.max() <= 1.0 else top
    levels = a / top * 255.0
  else:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
      im = im.convert("RGBA")
    return im.convert("RGB")
  return Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8)).convert("RGB")


def _read(path, convert, what: str) -> np.ndarray:
  """`convert(PIL image)` of the file at `path` as a uint8 array, with every guard of a
  photo: missing, a directory, unreadable, truncated, too many pixels."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise InputError(f"{what} not found: {path}")
  if os.path.isdir(path):
    raise InputError(f"{what} path is a directory: {path}")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        w, h = im.size
        if w * h > MAX_PIXELS:
          raise InputError(f"{what} {path} is {w}x{h} pixels, more than the "
                           f"{MAX_PIXELS // 1_000_000} million accepted")
        arr = np.asarray(convert(ImageOps.exif_transpose(im)), dtype=np.uint8)
    if _png_rows_missing(path):
      raise InputError(f"cannot read {what} {path}: image file is truncated (fewer rows "
                       "than its header declares)")
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise InputError(f"{what} {path} is too large to decode safely: {e}") from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    if isinstance(e, InputError):
      raise
    raise InputError(f"cannot read {what} {path}: {e}") from None
  return arr


def load_image(path: str | os.PathLike) -> np.ndarray:
  """Reads a photo as uint8 RGB (H, W, 3).

  EXIF orientation is applied; greyscale (8, 16 or 32 bits) is scaled to 0..255 and
  replicated to three channels; an alpha channel is dropped (pixels keep their
  colour). Raises `InputError` with a one-line reason for a missing, unreadable,
  truncated or implausibly large file.
  """
  return _read(path, _to_uint8, "image")


def load_mask(path: str | os.PathLike, what: str = "mask") -> np.ndarray:
  """Reads a mask as (H, W) uint8 grey levels, with `load_image`'s guards."""
  return _read(path, lambda im: _to_uint8(im).convert("L"), what)


def as_rgb_uint8(image, name: str = "image") -> np.ndarray:
  """Checks that `image` is an (H, W, 3) uint8 array (greyscale (H, W) is expanded)."""
  arr = np.asarray(image)
  if arr.dtype != np.uint8:
    raise InputError(f"{name} must be uint8 with values 0..255, got dtype {arr.dtype}")
  if arr.ndim == 2:
    arr = np.repeat(arr[..., None], 3, axis=-1)
  if arr.ndim != 3 or arr.shape[-1] != 3:
    raise InputError(f"{name} must have shape (H, W, 3) (RGB), got {arr.shape}")
  return arr


def crop_square(image: np.ndarray, crop: str = "top_left") -> tuple[np.ndarray, tuple[int, int, int]]:
  """The largest square: top-left (the seed's `imcrop(im, [1 1 s-1 s-1])`) or centred.

  Returns the square and its (top, left, side) in the original image.
  """
  if crop not in CROPS:
    raise InputError(f"crop must be one of {CROPS}, got {crop!r}")
  h, w = image.shape[:2]
  side = min(h, w)
  if side < MIN_SIDE:
    raise InputError(f"image is too small: {h}x{w}, need at least {MIN_SIDE}x{MIN_SIDE}")
  top, left = (0, 0) if crop == "top_left" else ((h - side) // 2, (w - side) // 2)
  return image[top:top + side, left:left + side], (top, left, side)


def crop_to_box(a: np.ndarray, crop_box) -> np.ndarray:
  """The (top, left, side) square of an (H, W, ...) array (a `crop_square` box)."""
  top, left, side = crop_box
  return a[top:top + side, left:left + side]


def _cubic(x: np.ndarray) -> np.ndarray:
  ax = np.abs(x)
  ax2, ax3 = ax * ax, ax * ax * ax
  return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
          + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=64)
def resize_matrix(in_len: int, out_len: int) -> np.ndarray:
  """(out_len, in_len) float64 matrix of MATLAB's `imresize` along one axis.

  Bicubic kernel of width 4, antialiased when shrinking, weights normalised per row,
  indices beyond the border folded back symmetrically (MATLAB's `contributions`).
  """
  if in_len < 1 or out_len < 1:
    raise InputError(f"cannot resize {in_len} -> {out_len} pixels")
  scale = out_len / in_len
  width = 4.0
  if scale < 1:
    kernel = lambda x: scale * _cubic(scale * x)
    width = width / scale
  else:
    kernel = _cubic
  x = np.arange(1, out_len + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - width / 2)
  taps = int(np.ceil(width)) + 2
  idx = left[:, None] + np.arange(taps)[None, :]
  wts = kernel(u[:, None] - idx)
  wts = wts / wts.sum(axis=1, keepdims=True)
  fold = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
  idx = fold[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
  m = np.zeros((out_len, in_len))
  np.add.at(m, (np.repeat(np.arange(out_len), taps), idx.ravel()), wts.ravel())
  return m


def resize_levels(image, out_hw: tuple[int, int], xp=np):
  """Resizes float 0..255 levels (..., H, W, C) like `imresize` on uint8.

  Rounded and clipped to 0..255 as MATLAB does for uint8; stays float. `xp` is numpy
  or jax.numpy (so it runs inside jit with constant matrices).
  """
  h, w = image.shape[-3], image.shape[-2]
  mh = xp.asarray(resize_matrix(h, out_hw[0]), dtype=image.dtype)
  mw = xp.asarray(resize_matrix(w, out_hw[1]), dtype=image.dtype)
  out = xp.einsum("ih,...hwc,jw->...ijc", mh, image, mw, optimize=True)  # two matmuls
  return xp.clip(xp.round(out), 0, 255)


def resize_channel(levels, out_hw) -> np.ndarray:
  """`imresize` of one (H, W) channel of 0..255 levels: (out_h, out_w) float64, rounded."""
  a = np.asarray(levels, np.float64)
  return resize_levels(a[..., None], (int(out_hw[0]), int(out_hw[1])))[..., 0]


def resize_mask(mask, out_hw) -> np.ndarray:
  """A mask resized with `imresize` as a 0/255 image and thresholded at 128: bool.

  A float mask is taken as a probability in [0, 1] (not rounded first), so a net's soft
  edges place the resized border between its pixels.
  """
  m = np.asarray(mask)
  m = m.astype(np.float64) if np.issubdtype(m.dtype, np.floating) else m.astype(bool)
  return resize_channel(np.clip(m, 0, 1).astype(np.float64) * 255, out_hw) >= 128


def resize_uint8(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """`imresize(image, out_hw)` for a uint8 (H, W, C) array."""
  return resize_levels(image.astype(np.float64), out_hw).astype(np.uint8)


def rgb_to_gray(levels, xp=jnp):
  """`rgb2gray` on 0..255 levels (..., 3) -> (...), rounded as for uint8 input."""
  w = xp.asarray(GRAY_WEIGHTS, dtype=levels.dtype)
  return xp.round(levels @ w)


#: Lengths given in pixels (GrabCut's band, the boundary-F tolerance, simulated outline
#: offsets and jitter, stroke widths) are pixels of a FRAME x FRAME image, the seed's,
#: whatever the run's size, so one setting means the same on a 100x100 and a 400x400 run.
FRAME = 100


def frame_length(length: float, side: float) -> float:
  """`length` pixels of the FRAME x FRAME image in pixels of a `side` x `side` one."""
  return length * side / FRAME


def prepare_image(image: np.ndarray, size: int = 100, scale: float = 0.1,
                  crop: str = "top_left") -> PreparedImage:
  """Square crop, `size` x `size` image and its `scale` thumbnail (seed: 100, 0.1)."""
  image = as_rgb_uint8(image)
  if not isinstance(size, (int, np.integer)) or size < MIN_SIDE:
    raise InputError(f"size must be an integer >= {MIN_SIDE}, got {size!r}")
  small = thumbnail_size(size, scale)
  square, box = crop_square(image, crop)
  resized = resize_uint8(square, (size, size))
  return PreparedImage(resized, resize_uint8(resized, (small, small)), box)


def thumbnail_size(size: int, scale: float) -> int:
  """Side of the thumbnail (MATLAB: ceil(size * scale)); must be at least 1."""
  if not 0 < scale <= 1:
    raise InputError(f"scale must be in (0, 1], got {scale!r}")
  small = int(np.ceil(size * scale - 1e-9))
  return max(small, 1)


def polygon_mask(vertices, height: int, width: int) -> np.ndarray:
  """Rasterises a closed polygon of (x, y) vertices (pixel units, x to the right).

  A pixel is inside when its centre (x + 0.5, y + 0.5) is inside by the even-odd
  rule, as MATLAB's `poly2mask`/`createMask` decide it for pixel centres. Coordinates
  are in the frame of a `height` x `width` image whose top-left corner is (0, 0).
  """
  v = np.asarray(vertices, dtype=np.float64)
  if v.ndim != 2 or v.shape[1] != 2:
    raise InputError(f"outline must be a list of [x, y] points, got shape {v.shape}")
  if len(v) < 3:
    raise InputError(f"outline needs at least 3 points, got {len(v)}")
  if not np.all(np.isfinite(v)):
    raise InputError("outline has non-finite coordinates")
  cx = np.arange(width) + 0.5
  cy = np.arange(height) + 0.5
  px, py = np.meshgrid(cx, cy)
  inside = np.zeros((height, width), dtype=bool)
  x0, y0 = v[:, 0], v[:, 1]
  x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
  for a, b, c, d in zip(x0, y0, x1, y1):
    if b == d:
      continue
    crosses = (b > py) != (d > py)
    xint = a + (py - b) * (c - a) / (d - b)
    inside ^= crosses & (px < xint)
  return inside
