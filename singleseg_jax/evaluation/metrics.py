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
`imresize` (bicubic, antialiased when shrinking): masks as 0/255 images thresholded
at one half (as `experiments.cutouts.full_resolution` scales the method's mask), and
the ground truth as the three indicator images (object, band, background) whose
resized fractions decide each small pixel (`downsample_labels`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from singleseg_jax.errors import InputError
from singleseg_jax.evaluation.outlines import distance_transform, within_distance
from singleseg_jax import image as image_lib

OBJECT, IGNORE, BACKGROUND = 255, 128, 0


class Labels(NamedTuple):
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


def boundary(mask) -> np.ndarray:
  """Mask pixels with a 4-neighbour outside the mask (edge-replicated at the border)."""
  m = np.asarray(mask).astype(bool)
  p = np.pad(m, 1, mode="edge")
  interior = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
  return m & ~interior


class BoundaryScore(NamedTuple):
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


def resize_levels_2d(levels, out_hw) -> np.ndarray:
  """`imresize` of one (H, W) channel of 0..255 levels, rounded and clipped like uint8.

  """
  a = np.asarray(levels, np.float64)
  return image_lib.resize_levels(a[..., None], (int(out_hw[0]), int(out_hw[1])))[..., 0]


def _resize_fraction(indicator: np.ndarray, out_hw) -> np.ndarray:
  return resize_levels_2d(indicator.astype(np.float64) * 255, out_hw) / 255


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


def resize_mask(mask, out_hw) -> np.ndarray:
  """A mask resized with `imresize` as a 0/255 image and thresholded at 128. A float
  mask is taken as a probability in [0, 1] (not rounded first)."""
  m = np.asarray(mask)
  m = m.astype(np.float64) if np.issubdtype(m.dtype, np.floating) else m.astype(bool)
  return resize_levels_2d(np.clip(m, 0, 1).astype(np.float64) * 255, out_hw) >= 128


def crop_box_array(a: np.ndarray, crop_box) -> np.ndarray:
  """The (top, left, side) square of an (H, W, ...) array."""
  top, left, side = crop_box
  return a[top:top + side, left:left + side]


def scores(pred, labels: Labels, tolerance: float) -> dict:
  """IoU and boundary F (with its precision and recall) of one prediction."""
  bf = boundary_fscore(pred, labels.object, labels.ignore, tolerance)
  return {"iou": iou(pred, labels.object, labels.ignore), "bf": bf.f,
          "bf_precision": bf.precision, "bf_recall": bf.recall}


def summarise_ci(values, confidence: float = 0.95) -> tuple[float, float]:
  """(mean, half-width of the Student-t interval) of independent values (nan-free).

  The half-width is nan for fewer than two values. Only 95% is tabulated.
  """
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if len(v) == 0:
    return float("nan"), float("nan")
  if confidence != 0.95:
    raise InputError("only 95% intervals are tabulated")
  mean = float(v.mean())
  if len(v) < 2:
    return mean, float("nan")
  half = t_quantile_975(len(v) - 1) * float(v.std(ddof=1)) / np.sqrt(len(v))
  return mean, half


# Student's t 0.975 quantiles for 1..30 degrees of freedom (scipy.stats.t.ppf).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_quantile_975(df: int) -> float:
  """Student's t 0.975 quantile (table to 30 df, then the Cornish-Fisher expansion)."""
  if df < 1:
    raise InputError(f"degrees of freedom must be >= 1, got {df}")
  if df <= len(_T975):
    return _T975[df - 1]
  z = 1.959964
  return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
