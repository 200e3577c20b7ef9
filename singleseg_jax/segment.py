"""Segmentation with a fitted net: a user's outline in, the variant's answer out.

The paper's net sees the outline on its 10x10 thumbnail (`paper.predict`); the snap
net sees it at full 100x100 resolution and answers a foreground probability per
pixel (its mask is probability > 1/2, its output the image times that probability,
and its `input_thumbnail` the image inside the outline).
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from singleseg_jax import image as image_lib
from singleseg_jax import variants
from singleseg_jax.errors import InputError
from singleseg_jax.variants import Segmentation

__all__ = ["Segmentation", "check_outline", "segment"]


def check_outline(outline, size: int) -> np.ndarray:
  """A bool/0-1 outline mask of shape (S, S) or (N, S, S) as bool; InputError otherwise."""
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


def segment(model, image, outline, key: jax.Array) -> Segmentation:
  """Cut-out of `image` ((S, S, 3) uint8, e.g. 100x100) inside `outline` ((S, S) bool).

  `model` is a fitted net of any variant (or anything with `graphdef`/`params`, such
  as a `TrainState`). Several outlines (N, S, S) give N results in one call. `key`
  draws the paper net's input noise (snap nets ignore it).
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
  result = variants.for_model(graphdef, params).predict(graphdef, params, image, outline, key)
  return Segmentation(*(None if a is None else a[0] for a in result)) if single else result
