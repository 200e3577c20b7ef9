"""Segmentation with a fitted net: user outline -> network input -> cut-out and mask.

The input is built as in `segment_image.m`: the thumbnail of the 100x100 image is
multiplied by `imresize(outline, 0.1)` (a bicubic, antialiased resize rounded to 0/1,
so a thumbnail pixel counts as inside when roughly half of its 10x10 block is), then
goes through the same grayscale + tile + noise path as the training inputs.

The net was trained to output `image .* mask`, so each output pixel is either the
image's colour (object) or black (background). The binary mask marks the pixels
whose output is closer to the image's colour than to black (squared RGB distance);
pixels where the image itself is black are ambiguous and count as background.

A `snap` net (`singleseg_jax.snap`) sees the outline at full resolution and answers a
foreground probability per pixel: the mask is probability > 1/2, the output the image
times that probability, and `input_thumbnail` the image inside the outline.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from singleseg_jax import image as image_lib
from singleseg_jax import snap
from singleseg_jax.data import network_input
from singleseg_jax.errors import InputError


class Segmentation(NamedTuple):
  output: np.ndarray         # (..., S, S, 3) float32 in [0, 1]: the net's image
  mask: np.ndarray           # (..., S, S) bool: derived foreground
  input_thumbnail: np.ndarray  # (..., s, s, 3) uint8: thumbnail times the 10x10 outline
  outline_small: np.ndarray  # (..., s, s) bool: the outline as the net sees it
  probability: Optional[np.ndarray] = None  # (..., S, S) float32 (snap nets only)


def mask_from_output(output, image):
  """Foreground where the output is nearer the image colour than black (both in [0,1])."""
  d_img = jnp.sum((output - image) ** 2, axis=-1)
  d_black = jnp.sum(output ** 2, axis=-1)
  return d_img < d_black


@functools.partial(jax.jit, static_argnums=(0, 5))
def _segment(graphdef, params, key, image, outlines, scale):
  size = image.shape[0]
  small = image_lib.thumbnail_size(size, scale)
  thumb = image_lib.resize_levels(image, (small, small), xp=jnp)
  outline_small = image_lib.resize_levels(outlines[..., None].astype(jnp.float32), (small, small),
                                          xp=jnp)[..., 0] > 0
  masked = thumb * outline_small[..., None]
  model = nnx.merge(graphdef, params)
  x = network_input(key, masked, model.in_channels)
  out = model(x)
  mask = mask_from_output(out, image / 255.0)
  return out, mask, masked, outline_small


@functools.lru_cache(maxsize=4)
def _graph(image_bytes: bytes, size: int, num_segments: int) -> snap.Graph:
  image = np.frombuffer(image_bytes, np.uint8).reshape(size, size, 3)
  return jax.jit(snap.make_graph, static_argnums=1)(jnp.asarray(image, jnp.float32),
                                                    num_segments)


@jax.jit
def _snap_probability(graphdef, params, graph, outlines):
  return snap.probability(nnx.merge(graphdef, params), graph, outlines)


def _segment_snap(graphdef, params, image, outline):
  model = nnx.merge(graphdef, params)
  graph = _graph(image.tobytes(), image.shape[0], model.num_segments)
  prob = np.asarray(_snap_probability(graphdef, params, graph, jnp.asarray(outline)))
  output = (image[None] / 255.0 * prob[..., None]).astype(np.float32)
  inside = (image[None] * outline[..., None]).astype(np.uint8)
  return Segmentation(output, prob > 0.5, inside, outline.copy(), prob.astype(np.float32))


def check_outline(outline, size: int) -> np.ndarray:
  """Validates a bool/0-1 outline mask of shape (S, S) or (N, S, S); returns bool."""
  arr = np.asarray(outline)
  if arr.ndim not in (2, 3) or arr.shape[-2:] != (size, size):
    raise InputError(f"outline mask must have shape ({size}, {size}) or (N, {size}, {size}), "
                     f"got {arr.shape}")
  if arr.dtype != bool:
    if not np.isin(np.unique(arr), (0, 1)).all():
      raise InputError("outline mask must be boolean or hold only 0 and 1")
    arr = arr.astype(bool)
  flat = arr.reshape(-1, size * size)
  if not flat.any(axis=1).all():
    raise InputError("outline is empty: it encloses no pixel")
  return arr


def _first(result: Segmentation) -> Segmentation:
  return Segmentation(*(None if a is None else a[0] for a in result))


def is_snap(graphdef, params) -> bool:
  """True for a `snap.SnapNet`'s graph."""
  return isinstance(nnx.merge(graphdef, params), snap.SnapNet)


def segment(model, image, outline, key: jax.Array, *, scale: float = 0.1) -> Segmentation:
  """Cut-out of `image` ((S, S, 3) uint8, e.g. 100x100) inside `outline` ((S, S) bool).

  `model` is a fitted `Upsampler` or `snap.SnapNet` (or anything with
  `graphdef`/`params`, such as a `TrainState`). Several outlines (N, S, S) give N
  results in one call. `key` draws the paper net's input noise (snap nets ignore it).
  """
  image = image_lib.as_rgb_uint8(image)
  size = image.shape[0]
  if image.shape[1] != size:
    raise InputError(f"image must be square, got {image.shape[:2]}")
  outline = check_outline(outline, size)
  single = outline.ndim == 2
  outline = outline[None] if single else outline
  if hasattr(model, "graphdef") and hasattr(model, "params"):
    graphdef, params = model.graphdef, model.params
  else:
    graphdef, params = nnx.split(model, nnx.Param)
  if is_snap(graphdef, params):
    result = _segment_snap(graphdef, params, image, outline)
    return _first(result) if single else result
  out, mask, masked, small = _segment(graphdef, params, key, jnp.asarray(image, jnp.float32),
                                      jnp.asarray(outline), scale)
  small = np.asarray(small)
  if not small.reshape(small.shape[:-2] + (-1,)).any(axis=-1).all():
    raise InputError("outline is too small: it covers no thumbnail pixel (at 100x100 it must "
                     "enclose roughly half of a 10x10 block)")
  result = Segmentation(np.asarray(out), np.asarray(mask), np.asarray(masked).astype(np.uint8),
                        small)
  return _first(result) if single else result
