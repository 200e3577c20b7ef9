"""The paper's net on a user's outline: outline -> 10x10 input -> 100x100 output and mask.

The input is built as in `segment_image.m`: the thumbnail of the 100x100 image is
multiplied by `imresize(outline, 0.1)` (a bicubic, antialiased resize rounded to 0/1,
so a thumbnail pixel counts as inside when roughly half of its 10x10 block is), then
goes through the same grayscale + tile + noise path as the training inputs. Nets that
also take the image (the encdec variant) get it beside that input.

The net was trained to output `image .* mask`, so each output pixel is either the
image's colour (object) or black (background). The binary mask marks the pixels
whose output is closer to the image's colour than to black (squared RGB distance);
pixels where the image itself is black are ambiguous and count as background.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from singleseg_jax import image as image_lib
from singleseg_jax.errors import InputError
from singleseg_jax.paper.data import network_input
from singleseg_jax.train import apply_model


def mask_from_output(output, image):
  """Foreground where the output is nearer the image colour than black (both in [0,1])."""
  d_img = jnp.sum((output - image) ** 2, axis=-1)
  d_black = jnp.sum(output ** 2, axis=-1)
  return d_img < d_black


@functools.partial(jax.jit, static_argnums=(0, 5))
def _predict(graphdef, params, key, image, outlines, scale):
  size = image.shape[0]
  small = image_lib.thumbnail_size(size, scale)
  thumb = image_lib.resize_levels(image, (small, small), xp=jnp)
  outline_small = image_lib.resize_levels(outlines[..., None].astype(jnp.float32), (small, small),
                                          xp=jnp)[..., 0] > 0
  masked = thumb * outline_small[..., None]
  model = nnx.merge(graphdef, params)
  out = apply_model(model, network_input(key, masked, model.in_channels), image)
  return out, mask_from_output(out, image / 255.0), masked, outline_small


def predict(graphdef, params, image: np.ndarray, outlines: np.ndarray, key: jax.Array,
            scale: float = 0.1) -> dict:
  """{output, mask, input_thumbnail, outline_small} for (N, S, S) bool outlines.

  Raises InputError when an outline covers no thumbnail pixel (the net would get an
  all-black input and answer nothing the user asked for).
  """
  out, mask, masked, small = _predict(graphdef, params, key, jnp.asarray(image, jnp.float32),
                                      jnp.asarray(outlines), scale)
  small = np.asarray(small)
  if not small.reshape(small.shape[:-2] + (-1,)).any(axis=-1).all():
    raise InputError("outline is too small: it covers no thumbnail pixel (at 100x100 it must "
                     "enclose roughly half of a 10x10 block)")
  return {"output": np.asarray(out), "mask": np.asarray(mask),
          "input_thumbnail": np.asarray(masked).astype(np.uint8), "outline_small": small}
