"""The paper's net on a user's outline: outline -> thumbnail input -> output and mask
(seed: 10x10 -> 100x100; any size the net was built for).

The input is built as in `segment_image.m`: the thumbnail of the image is multiplied
by `imresize(outline, scale)` (a bicubic, antialiased resize rounded to 0/1, so a
thumbnail pixel counts as inside when roughly half of its block, 10x10 in the seed,
is), then
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


@functools.partial(jax.jit, static_argnums=0)
def _predict(graphdef, params, key, image, outlines):
  model = nnx.merge(graphdef, params)
  small = model.input_side
  thumb = image_lib.resize_levels(image, (small, small), xp=jnp)
  outline_small = image_lib.resize_levels(outlines[..., None].astype(jnp.float32), (small, small),
                                          xp=jnp)[..., 0] > 0
  masked = thumb * outline_small[..., None]
  out = apply_model(model, network_input(key, masked, model.in_channels), image)
  return out, mask_from_output(out, image / 255.0), masked, outline_small


def predict(graphdef, params, image: np.ndarray, outlines: np.ndarray, key: jax.Array) -> dict:
  """{output, mask, input_thumbnail, outline_small} for (N, S, S) bool outlines on an
  (S, S, 3) image, S the net's output side; the thumbnails are the net's input side.

  Raises InputError when an outline covers no thumbnail pixel (the net would get an
  all-black input and answer nothing the user asked for).
  """
  side = nnx.merge(graphdef, params).output_side
  if image.shape[:2] != (side, side):
    raise InputError(f"the net answers at {side}x{side}, got a "
                     f"{image.shape[1]}x{image.shape[0]} image")
  out, mask, masked, small = _predict(graphdef, params, key, jnp.asarray(image, jnp.float32),
                                      jnp.asarray(outlines))
  small = np.asarray(small)
  if not small.reshape(small.shape[:-2] + (-1,)).any(axis=-1).all():
    block = side / small.shape[-1]
    raise InputError(f"outline is too small: it covers no thumbnail pixel (at {side}x{side} it "
                     f"must enclose roughly half of a {block:.3g}x{block:.3g} block)")
  return {"output": np.asarray(out), "mask": np.asarray(mask),
          "input_thumbnail": np.asarray(masked).astype(np.uint8), "outline_small": small}
