"""Distances, boundaries and connected components of boolean masks (numpy, scipy.ndimage).

These run on the host, outside jit, so they use `scipy.ndimage` (installed with jax)
rather than hand-written loops. The snap variant needs distances inside jit, on the
device: that version is `snap.regions.distance_to`, in jax.numpy.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from singleseg_jax.errors import InputError

#: 4-neighbourhood (a pixel's boundary test) and 8-neighbourhood (components).
_CROSS = ndimage.generate_binary_structure(2, 1)
_SQUARE = ndimage.generate_binary_structure(2, 2)


def as_bool_2d(mask, name: str = "mask") -> np.ndarray:
  """`mask` as a 2-D bool array; InputError for any other rank."""
  arr = np.asarray(mask)
  if arr.ndim != 2:
    raise InputError(f"{name} must be a 2-D array, got shape {arr.shape}")
  return arr.astype(bool, copy=False)


def distance_transform(features) -> np.ndarray:
  """Exact Euclidean distance from every pixel to the nearest True pixel of `features`.

  Pixels are compared by their centres; True pixels get 0, and every pixel gets inf
  when there is no True pixel.
  """
  f = as_bool_2d(features, "features")
  if not f.any():
    return np.full(f.shape, np.inf)
  return ndimage.distance_transform_edt(~f)


def within_distance(features, radius: float) -> np.ndarray:
  """Pixels whose Euclidean distance to a True pixel of `features` is <= `radius`."""
  if radius < 0:
    raise InputError(f"radius must be >= 0, got {radius}")
  # The tolerance keeps integer radii exact: sqrt(k) is computed, not stored exactly.
  return distance_transform(features) <= radius + 1e-9


def boundary(mask, image_border: bool = False) -> np.ndarray:
  """Mask pixels with a 4-neighbour outside the mask.

  `image_border=False` (the metrics' rule) treats the image border as no boundary: a
  crop cuts objects, and their cut edge is not theirs. `True` (for drawing an outline)
  counts pixels on the image border as boundary too.
  """
  m = as_bool_2d(mask)
  interior = ndimage.binary_erosion(m, _CROSS, border_value=0 if image_border else 1)
  return m & ~interior


def label_components(mask) -> tuple[np.ndarray, int]:
  """8-connected components: (labels (H, W) int32, 0 = background, 1..n in raster order), n."""
  labels, n = ndimage.label(as_bool_2d(mask), structure=_SQUARE)
  return labels.astype(np.int32), int(n)
