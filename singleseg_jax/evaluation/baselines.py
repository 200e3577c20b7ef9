"""Baselines that answer the same outline without the fitted net.

- `outline_answer`: the outline itself.
- `thumbnail_roundtrip`: the outline as the net sees it, `imresize(outline, 0.1)`
  rounded to 0/1 exactly as `singleseg_jax.segment` builds the input (a thumbnail pixel
  is inside when roughly half of its 10x10 block is), then sized back up: `nearest`
  repeats each thumbnail pixel over its block; `bicubic` runs `imresize` on the 0/255
  thumbnail and thresholds at one half. This is what the method does without the net.
- `grabcut`: OpenCV's GrabCut initialised from the outline (`cv2.GC_INIT_WITH_MASK`):
  inside probable foreground; with `band=0` everything outside is background (plain);
  with `band=b` the pixels outside within b pixels of the outline are probable
  background and the rest background (the trimap variant). `band` is in pixels of the
  image GrabCut runs on: callers pass `DEFAULT_BAND * side / 100`. `union_grabcut` starts
  the trimap variant from the outline united with a net's mask; `edge_band_grabcut`
  lets GrabCut move a net's answer only within a band along its boundary. OpenCV is the
  optional `eval` extra (`pip install 'singleseg-jax[eval]'`), imported only when called.
- `superpixel_vote`: each superpixel taken when the outline covers at least half of
  it: the selection the snap variant makes without its net.
- `outline_offset`: how far off the outline was drawn, estimated from the image's
  colour gradient; `grabcut_grown` runs the trimap GrabCut from the outline grown by
  it where it says the outline lies inside the object.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from singleseg_jax import image as image_lib
from singleseg_jax.errors import InputError
from singleseg_jax.evaluation.outlines import offset_mask
from singleseg_jax.geometry import boundary, distance_transform, within_distance
from singleseg_jax.image import resize_mask

UPSAMPLING = ("nearest", "bicubic")
#: GrabCut's defaults for the baselines and the hybrid: the probable-background band in
#: pixels of the 100x100 frame (callers scale it by side / 100 at full resolution, so
#: it covers the same share of every image), and iterations: the best of a sweep on
#: development images for GrabCut alone and for the hybrid (the README's tables).
DEFAULT_BAND = 8.0
DEFAULT_ITERATIONS = 3
#: `edge_band_grabcut`'s band in pixels of the 100x100 frame, set by reasoning, not
#: swept: half the side of one of snap's 100 superpixels of the 100x100 image (about
#: 10 px across), as far as a superpixel that straddles the object's edge can put the
#: net's boundary off it.
DEFAULT_EDGE_BAND = 5.0
EVAL_EXTRA_HINT = "pip install 'singleseg-jax[eval]' (or pip install opencv-python-headless)"


def _mask(outline, name: str = "outline") -> np.ndarray:
  m = np.asarray(outline)
  if m.ndim != 2:
    raise InputError(f"{name} must be a 2-D mask, got shape {m.shape}")
  return m.astype(bool)


def outline_answer(outline) -> np.ndarray:
  """The outline itself as the segmentation."""
  return _mask(outline).copy()


def thumbnail_of(outline, scale: float = 0.1) -> np.ndarray:
  """The outline as the net sees it: `imresize(outline, scale) > 0` on 0/1 levels,
  computed with `jax.numpy` in float32 like `singleseg_jax.segment`."""
  m = _mask(outline)
  h, w = m.shape
  small = (image_lib.thumbnail_size(h, scale), image_lib.thumbnail_size(w, scale))
  levels = image_lib.resize_levels(jnp.asarray(m, jnp.float32)[..., None], small, xp=jnp)
  return np.asarray(levels[..., 0] > 0)


def thumbnail_roundtrip(outline, scale: float = 0.1, upsample: str = "nearest") -> np.ndarray:
  """The outline down to the net's thumbnail and back up to its own size."""
  if upsample not in UPSAMPLING:
    raise InputError(f"upsample must be one of {UPSAMPLING}, got {upsample!r}")
  m = _mask(outline)
  h, w = m.shape
  small = thumbnail_of(m, scale)
  if upsample == "nearest":
    rows = np.minimum((np.arange(h) * small.shape[0]) // h, small.shape[0] - 1)
    cols = np.minimum((np.arange(w) * small.shape[1]) // w, small.shape[1] - 1)
    return small[rows][:, cols]
  return resize_mask(small, (h, w))


def require_cv2():
  """OpenCV, or an InputError that says how to install it."""
  try:
    import cv2  # noqa: PLC0415 (optional dependency, imported on use)
  except ImportError:
    raise InputError(f"the GrabCut baselines need OpenCV: {EVAL_EXTRA_HINT}") from None
  return cv2


def grabcut_init(outline, band: float = 0) -> np.ndarray:
  """GrabCut's initial labels (uint8 cv2.GC_* codes) from an outline."""
  cv2 = require_cv2()
  m = _mask(outline)
  init = np.where(m, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
  if band > 0:
    init[~m & within_distance(m, band)] = cv2.GC_PR_BGD
  return init


def grabcut_degenerate(init: np.ndarray) -> bool:
  """True when GrabCut cannot run: no (probable) foreground or no background sample."""
  cv2 = require_cv2()
  fg = np.isin(init, (cv2.GC_FGD, cv2.GC_PR_FGD))
  return not fg.any() or fg.all()


def grabcut(image, outline, *, band: float = 0, iterations: int = 5, seed: int = 0,
            sure_fg=None, sure_bg=None) -> np.ndarray:
  """GrabCut's foreground (bool (H, W)) for a uint8 RGB image and an outline mask.

  `band` > 0 gives the trimap variant (see the module doc). `sure_fg` and `sure_bg`
  (bool masks, a person's corrections) become cv2.GC_FGD and cv2.GC_BGD in the initial
  labels, so GrabCut keeps them whatever the colours say. The OpenCV RNG is reseeded
  with `seed` first, so results repeat. Where GrabCut cannot run (no foreground or no
  background sample), the starting foreground itself is returned; `grabcut_degenerate`
  tells when.
  """
  cv2 = require_cv2()
  img = image_lib.as_rgb_uint8(image)
  m = _mask(outline)
  if img.shape[:2] != m.shape:
    raise InputError(f"image {img.shape[:2]} and outline {m.shape} differ in size")
  if not isinstance(iterations, (int, np.integer)) or iterations < 1:
    raise InputError(f"iterations must be a positive integer, got {iterations!r}")
  init = grabcut_init(m, band)
  if sure_fg is not None:
    init[_mask(sure_fg, "sure_fg")] = cv2.GC_FGD
  if sure_bg is not None:
    init[_mask(sure_bg, "sure_bg")] = cv2.GC_BGD
  if grabcut_degenerate(init):
    return np.isin(init, (cv2.GC_FGD, cv2.GC_PR_FGD))
  cv2.setRNGSeed(int(seed))
  labels = init.copy()
  bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
  bgr = np.ascontiguousarray(img[..., ::-1])
  cv2.grabCut(bgr, labels, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)
  return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def union_grabcut(image, outline, net_mask, *, band: float, iterations: int = DEFAULT_ITERATIONS,
                  seed: int = 0, sure_fg=None, sure_bg=None) -> np.ndarray:
  """The snap + GrabCut hybrid: GrabCut with a `band`-pixel probable-background band
  (pixels of `image`), started from the outline united with the net's mask (all at the
  image's size).

  The net may only extend the outline (where it saw the object go on past it);
  GrabCut then trims what the outline took in too much. `sure_fg` / `sure_bg` are
  passed on to `grabcut`.
  """
  start = _mask(outline) | _mask(net_mask, "net mask")
  return grabcut(image, start, band=band, iterations=iterations, seed=seed,
                 sure_fg=sure_fg, sure_bg=sure_bg)


def edge_band_grabcut(image, mask, *, band: float, iterations: int = DEFAULT_ITERATIONS,
                      seed: int = 0) -> np.ndarray:
  """GrabCut that may move `mask`'s boundary by at most `band` pixels (of `image`): the
  mask's pixels deeper inside than `band` are sure foreground, those outside it farther
  than `band` sure background, and GrabCut labels only the band between (probable
  foreground inside the mask, probable background outside).

  Unlike `union_grabcut`, it keeps the parts a net selected whole even where their
  colours are unlike the rest of the object (GrabCut's colour models drop those), and
  refines only the net's edges, which follow superpixels rather than the image.
  """
  m = _mask(mask, "net mask")
  return grabcut(image, m, band=band, iterations=iterations, seed=seed,
                 sure_fg=offset_mask(m, -band))


def superpixel_vote(labels, outline) -> np.ndarray:
  """bool (H, W): every superpixel of `labels` (integer (H, W), as
  `snap.regions.superpixels`) that `outline` covers at least half of."""
  labels = np.asarray(labels)
  m = _mask(outline)
  if labels.shape != m.shape or not np.issubdtype(labels.dtype, np.integer):
    raise InputError(f"superpixel labels {labels.shape} ({labels.dtype}) do not fit the "
                     f"outline {m.shape}")
  k = int(labels.max()) + 1
  covered = np.bincount(labels.ravel(), m.ravel().astype(np.float64), k)
  area = np.maximum(np.bincount(labels.ravel(), None, k), 1)
  return (covered / area >= 0.5)[labels]


#: Offsets (px at 100x100; > 0: drawn outside the object) `outline_offset` tries: the
#: range of the evaluation's outlines and of snap's training outlines.
OFFSETS = tuple(range(-6, 11))


def outline_offset(image, outline) -> int:
  """The t of OFFSETS (px of `image`) for which the outline moved inward by t has the
  strongest mean colour gradient (Sobel, uint8 RGB `image`) along its inner border:
  where an outline drawn t px outside the object puts the object's edge."""
  from scipy import ndimage  # noqa: PLC0415 (with jax; only its Sobel filter is needed)
  img = image_lib.as_rgb_uint8(image).astype(np.float64)
  m = _mask(outline)
  if img.shape[:2] != m.shape:
    raise InputError(f"image {img.shape[:2]} and outline {m.shape} differ in size")
  grad = np.sqrt(sum(ndimage.sobel(img[..., c], a) ** 2 for c in range(3) for a in (0, 1)))
  sdf = np.where(m, -distance_transform(~m), distance_transform(m))
  best, best_score = 0, -1.0
  for t in OFFSETS:
    moved = sdf < -t
    border = boundary(moved, image_border=True)
    score = grad[border].mean() if border.any() else 0.0
    if score > best_score or (score == best_score and abs(t) < abs(best)):
      best, best_score = t, score
  return best


def grabcut_grown(image, outline, outline_small, image_small, *, band: float,
                  iterations: int = DEFAULT_ITERATIONS, seed: int = 0) -> np.ndarray:
  """The trimap GrabCut (`band` px of `image`) from `outline` grown by `outline_offset`'s
  estimate on the 100x100 `image_small` and `outline_small` where it is negative (the
  outline drawn inside the object), unchanged otherwise: the band already lets GrabCut
  shrink an outline drawn outside, and shrinking by the estimate was measured to lose
  (README, "Where GrabCut fails")."""
  t = outline_offset(image_small, outline_small)
  m = _mask(outline)
  if t < 0:
    m = within_distance(m, image_lib.frame_length(-t, m.shape[0]))
  return grabcut(image, m, band=band, iterations=iterations, seed=seed)
