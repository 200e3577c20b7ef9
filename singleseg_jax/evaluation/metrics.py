"""Region and boundary scores with an ignore band, and the ground truth at two scales.

Ground-truth masks are 8-bit: 255 object, 0 background, 128 an uncertain band along
the boundary that no metric counts (`split_labels` reads values >= 192 as object and
64..191 as the band, so a re-encoded mask still parses).

- `iou`: |P & G| / |P | G| over the pixels outside the ignore band (1 when both are
  empty there).
- `boundary_fscore`: boundary pixels are mask pixels with a 4-neighbour outside the
  mask (the image border is not a boundary: a crop cuts objects). A predicted
  boundary pixel is correct when a ground-truth boundary pixel lies within
  `tolerance` pixels (Euclidean, exact), and vice versa for recall; F is their
  harmonic mean. The ignore band: inside it the ground truth takes the prediction's
  own label before boundaries are extracted, so any boundary the prediction draws
  inside the band is exactly right, and the band's edges are never counted as
  ground-truth boundary where the prediction agrees with them.

Scaling between the 100x100 frame and the original crop uses the library's MATLAB
`imresize` (bicubic, antialiased when shrinking): masks by `image.resize_mask` (as
`cutouts.full_resolution` scales the method's mask), and
the ground truth as the three indicator images (object, band, background) whose
resized fractions decide each small pixel (`downsample_labels`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from singleseg_jax.errors import InputError
from singleseg_jax.geometry import boundary, distance_transform, within_distance
from singleseg_jax import image as image_lib

OBJECT, IGNORE, BACKGROUND = 255, 128, 0


class Labels(NamedTuple):
  """A ground truth split into the object and the band no metric counts."""
  object: np.ndarray  # (H, W) bool: the object (band pixels are False)
  ignore: np.ndarray  # (H, W) bool: the uncertain band


def _pair(pred, gt, ignore):
  p = np.asarray(pred).astype(bool)
  g = np.asarray(gt).astype(bool)
  if p.shape != g.shape:
    raise InputError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
  ig = np.zeros_like(g) if ignore is None else np.asarray(ignore).astype(bool)
  if ig.shape != g.shape:
    raise InputError(f"ignore mask {ig.shape} and ground truth {g.shape} differ in shape")
  return p, g, ig


def iou(pred, gt, ignore=None) -> float:
  """Intersection over union of two boolean masks, band pixels left out."""
  p, g, ig = _pair(pred, gt, ignore)
  valid = ~ig
  inter = np.count_nonzero(p & g & valid)
  union = np.count_nonzero((p | g) & valid)
  return 1.0 if union == 0 else inter / union


class BoundaryScore(NamedTuple):
  """Boundary F with its precision and recall."""
  f: float
  precision: float
  recall: float


def boundary_fscore(pred, gt, ignore=None, tolerance: float = 2.0) -> BoundaryScore:
  """Boundary precision, recall and F within `tolerance` pixels (see the module doc)."""
  p, g, ig = _pair(pred, gt, ignore)
  if tolerance < 0:
    raise InputError(f"tolerance must be >= 0, got {tolerance}")
  g = np.where(ig, p, g)
  bp, bg = boundary(p), boundary(g)
  n_p, n_g = np.count_nonzero(bp), np.count_nonzero(bg)
  if n_p == 0 and n_g == 0:
    return BoundaryScore(1.0, 1.0, 1.0)
  if n_p == 0 or n_g == 0:
    return BoundaryScore(0.0, float(n_p == 0), float(n_g == 0))
  precision = np.count_nonzero(bp & within_distance(bg, tolerance)) / n_p
  recall = np.count_nonzero(bg & within_distance(bp, tolerance)) / n_g
  f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
  return BoundaryScore(float(f), float(precision), float(recall))


def split_labels(mask) -> Labels:
  """An 8-bit ground truth (255 object, 128 band, 0 background) as (object, ignore)."""
  m = np.asarray(mask)
  if m.ndim == 3:
    m = m[..., 0]
  if m.ndim != 2:
    raise InputError(f"ground-truth mask must be 2-D, got shape {m.shape}")
  return Labels(m >= 192, (m >= 64) & (m < 192))


def _resize_fraction(indicator: np.ndarray, out_hw) -> np.ndarray:
  return image_lib.resize_channel(indicator.astype(np.float64) * 255, out_hw) / 255


def downsample_labels(labels: Labels, size: int) -> Labels:
  """The ground truth on a size x size grid: a pixel is in the band when at least half
  of it (by `imresize` weights) is band; otherwise it is object when its object
  fraction plus half its band fraction exceeds one half."""
  obj = _resize_fraction(labels.object, (size, size))
  band = _resize_fraction(labels.ignore, (size, size))
  ignore = band >= 0.5
  return Labels((obj + 0.5 * band > 0.5) & ~ignore, ignore)


def resolve_band(labels: Labels) -> np.ndarray:
  """The object with every band pixel given to the nearer of object and background
  (ties to the object): a best guess of the full object, for simulating outlines."""
  if not labels.ignore.any():
    return labels.object.copy()
  background = ~labels.object & ~labels.ignore
  to_obj = distance_transform(labels.object)
  to_bg = distance_transform(background)
  return labels.object | (labels.ignore & (to_obj <= to_bg))


def scores(pred, labels: Labels, tolerance: float) -> dict:
  """IoU and boundary F (with its precision and recall) of one prediction."""
  bf = boundary_fscore(pred, labels.object, labels.ignore, tolerance)
  return {"iou": iou(pred, labels.object, labels.ignore), "bf": bf.f,
          "bf_precision": bf.precision, "bf_recall": bf.recall}
