"""Outlines from files and boxes, and the pictures and cut-outs made from a segmentation.

Shared by the segment command and the web page. Outlines are checked whole before
anything is written; `write` replaces its output files only once every outline has
been answered.
"""
from __future__ import annotations

import json
import os
import re
from typing import NamedTuple, Optional

import numpy as np
from absl import logging
from PIL import Image

from singleseg_jax import figures, geometry, image as image_lib, matting
from singleseg_jax.errors import InputError
from singleseg_jax import variants
from singleseg_jax.variants import Segmentation, Variant


def _to_net_frame(points: np.ndarray, frame: str, crop_box, side: int) -> np.ndarray:
  """Maps (x, y) points to the side x side frame, checking they lie inside it."""
  points = np.asarray(points, np.float64)
  if frame == "original":
    top, left, crop = crop_box
    inside = ((points[:, 0] >= left) & (points[:, 0] <= left + crop)
              & (points[:, 1] >= top) & (points[:, 1] <= top + crop))
    if not inside.all():
      bad = points[~inside][0]
      raise InputError(f"outline point ({bad[0]:g}, {bad[1]:g}) lies outside the cropped "
                       f"square (left {left}, top {top}, side {crop})")
    points = (points - [left, top]) * (side / crop)
  out = (points < 0) | (points > side)
  if out.any():
    bad = points[out.any(1)][0]
    raise InputError(f"outline point ({bad[0]:g}, {bad[1]:g}) lies outside the "
                     f"{side}x{side} image")
  return points


class EnclosesNothing(InputError):
  """An outline whose polygon encloses no pixel centre (a tap, a tiny loop, a line)."""


def outline_mask(points, side: int, name: str = "outline", frame: str = "net",
                 crop_box=None) -> np.ndarray:
  """The one outline rule of every front end (segment, the page, the evaluation's
  files): (K, 2) (x, y) points in the user's frame -> a side x side bool mask.

  The points must be finite, at least 3, and inside the frame (messages name them in
  the user's own frame); the polygon must enclose a pixel centre by the even-odd rule,
  so a self-crossing outline counts by what it encloses, as it is drawn.
  """
  pts = np.asarray(points, np.float64)
  if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
    raise InputError(f"{name}: an outline needs at least 3 [x, y] points")
  if not np.isfinite(pts).all():
    raise InputError(f"{name}: outline coordinates must be finite numbers")
  mask = image_lib.polygon_mask(_to_net_frame(pts, frame, crop_box, side), side, side)
  if not mask.any():
    raise EnclosesNothing(f"{name}: the polygon is degenerate: it encloses no pixel centre")
  return mask


def _load_json(path: str) -> list:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise InputError(f"cannot read outline {path}: {e}") from None
  if isinstance(data, dict):
    data = data.get("polygons", data.get("polygon"))
  nested = isinstance(data, list) and data and all(
      isinstance(p, list) and p and isinstance(p[0], list) for p in data)
  polygons = data if nested else [data]
  try:
    polygons = [np.asarray(p, np.float64) for p in polygons]
  except (TypeError, ValueError):
    polygons = []
  if not polygons or any(p.ndim != 2 or p.shape[1] != 2 for p in polygons):
    raise InputError(f"{path}: expected [[x, y], ...] or a list of such polygons")
  return polygons


def _mask_png(path: str, info: dict, side: int) -> np.ndarray:
  m = image_lib.load_mask(path, "outline") > 0
  if m.shape == (side, side):
    return m
  if list(m.shape) == list(info["original_hw"]):
    return image_lib.resize_mask(image_lib.crop_to_box(m, info["crop_box"]), (side, side))
  raise InputError(f"{path}: mask is {m.shape[1]}x{m.shape[0]}; expected {side}x{side} or "
                   f"the original image's {info['original_hw'][1]}x{info['original_hw'][0]}")


def parse_box(text: str) -> list[list[float]]:
  """The four corners of an 'x0,y0,x1,y1' box; InputError if it is not one."""
  try:
    x0, y0, x1, y1 = (float(v) for v in text.split(","))
  except ValueError:
    raise InputError(f"--box must be x0,y0,x1,y1, got {text!r}") from None
  if x1 <= x0 or y1 <= y0:
    raise InputError(f"--box {text}: needs x0 < x1 and y0 < y1")
  return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def collect_outlines(outlines, boxes, frame: str, info: dict,
                     side: int) -> list[tuple[str, np.ndarray]]:
  """All outlines as (name, side x side bool mask); raises InputError before any output."""
  result = []
  for path in outlines:
    if path.lower().endswith(".json"):
      for i, poly in enumerate(_load_json(path)):
        name = f"{os.path.basename(path)}[{i}]"
        result.append((name, outline_mask(poly, side, name, frame, info["crop_box"])))
    else:
      result.append((os.path.basename(path), _mask_png(path, info, side)))
  for text in boxes:
    name = f"box {text}"
    pts = np.asarray(parse_box(text))
    if frame == "net":  # a box's far corner is inclusive (pixels x0..x1), up to the edge
      _to_net_frame(pts, frame, None, side)  # checked as typed
      pts = np.minimum(pts + np.array([[0, 0], [1, 0], [1, 1], [0, 1]]), side)
    result.append((name, outline_mask(pts, side, name, frame, info["crop_box"])))
  if not result:
    raise InputError("give at least one --outline or --box")
  for name, mask in result:
    if not mask.any():
      raise InputError(f"{name}: the outline is empty")
  return result


def outline_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """The image with the outline's boundary drawn in red (the paper's first panel)."""
  out = image.copy()
  out[geometry.boundary(mask, image_border=True)] = (255, 0, 0)
  return out


def rgba(image: np.ndarray, mask: np.ndarray, soft_edges: bool = False) -> np.ndarray:
  """The RGBA cut-out: `image` opaque inside the bool `mask`, transparent outside; with
  `soft_edges`, fractional alpha near the mask's edge (`matting.soft_alpha`)."""
  if soft_edges:
    alpha = np.round(matting.soft_alpha(image, mask) * 255).astype(np.uint8)
  else:
    alpha = np.where(mask, 255, 0).astype(np.uint8)
  return np.dstack([image, alpha])


def photo_rgba(original: np.ndarray, mask: np.ndarray, crop_box,
               soft_edges: bool = False) -> np.ndarray:
  """The RGBA cut-out of the whole photo for a mask of the photo that is empty outside
  the crop (`crop_box`); soft edges are computed on the crop only, where the answer is."""
  out = rgba(original, mask)
  if soft_edges:
    top, left, side = crop_box
    window = (slice(top, top + side), slice(left, left + side))
    out[window] = rgba(original[window], mask[window], soft_edges=True)
  return out


def full_resolution(mask: np.ndarray, original: np.ndarray, crop_box) -> tuple[np.ndarray, np.ndarray]:
  """(mask, RGBA cut-out) at the cropped original's resolution (bicubic, threshold 1/2).

  `mask` is bool or a probability in [0, 1] (a snap net's, whose soft edges then place
  the full-resolution border between the run's pixels)."""
  square = image_lib.crop_to_box(original, crop_box)
  big = image_lib.resize_mask(mask, square.shape[:2])
  return big, rgba(square, big)


def full_resolution_hybrid(outline: np.ndarray, soft: np.ndarray, original: np.ndarray,
                           crop_box, sure_fg=None, sure_bg=None) -> tuple[np.ndarray, np.ndarray]:
  """(mask, RGBA cut-out) at full resolution by the snap + GrabCut hybrid
  (`evaluation.baselines.union_grabcut`, needs OpenCV): GrabCut with the default band
  started from the outline united with the net's mask, both sized up from the run's side;
  `sure_fg` / `sure_bg` (full-resolution bool masks) are kept as GrabCut's sure labels."""
  from singleseg_jax.evaluation import baselines  # noqa: PLC0415 (OpenCV is optional)

  square = image_lib.crop_to_box(original, crop_box)
  net_big, _ = full_resolution(soft, original, crop_box)
  outline_big, _ = full_resolution(outline, original, crop_box)
  big = baselines.union_grabcut(square, outline_big, net_big,
                                band=image_lib.frame_length(baselines.DEFAULT_BAND,
                                                            square.shape[0]),
                                sure_fg=sure_fg, sure_bg=sure_bg)
  return big, rgba(square, big)


#: A correction stroke's width in pixels of the 100x100 frame (`image.FRAME`; sized up):
#: wide enough to hit a thin part with a finger, narrow enough to stay on it.
STROKE_WIDTH = 3.0
STROKE_MODES = ("add", "remove")


def stroke_masks(strokes, side: int, shape) -> tuple[np.ndarray, np.ndarray]:
  """(add, remove) bool masks of `shape` from (mode, points) strokes in the side x side frame."""
  # STROKE_WIDTH wide, scaled to `shape`; a later stroke wins where strokes overlap.
  from PIL import ImageDraw  # noqa: PLC0415

  h, w = shape
  scale = np.array([w / side, h / side])
  width = max(1, int(round(image_lib.frame_length(STROKE_WIDTH, (h + w) / 2))))
  add, remove = np.zeros(shape, bool), np.zeros(shape, bool)
  for mode, points in strokes:
    if mode not in STROKE_MODES:
      raise InputError(f"a stroke's mode must be one of {STROKE_MODES}, got {mode!r}")
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    xy = [tuple(p) for p in np.asarray(points, np.float64) * scale - 0.5]  # PIL: pixel centres
    if len(xy) > 1:
      draw.line(xy, fill=255, width=width, joint="curve")
    r = width / 2
    for x, y in (xy[0], xy[-1]):  # round caps, and a dot for a single tap
      draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    hit = np.asarray(canvas) > 0
    (add if mode == "add" else remove)[hit] = True
    (remove if mode == "add" else add)[hit] = False
  return add, remove


def corrected_full_resolution(outline: np.ndarray, soft: np.ndarray, original: np.ndarray,
                              crop_box, strokes=(), hybrid: bool = False) -> np.ndarray:
  """The bool mask at the crop's full resolution, corrected by add/remove strokes."""
  # With `hybrid`, the strokes are GrabCut's sure labels (so they also move the edge
  # around them); otherwise they are painted on the net's answer sized up.
  square = image_lib.crop_to_box(original, crop_box)
  add, remove = stroke_masks(strokes, outline.shape[0], square.shape[:2])
  if hybrid:
    big, _ = full_resolution_hybrid(outline, soft, original, crop_box, add, remove)
  else:
    big, _ = full_resolution(soft, original, crop_box)
  return (big | add) & ~remove


def can_refine(variant: Variant) -> tuple[bool, str]:
  """(whether the hybrid can refine answers of `variant`, why not)."""
  from singleseg_jax.evaluation import baselines  # noqa: PLC0415

  if not variant.refinable:
    names = [v.name for v in variants.REGISTRY.values() if v.refinable]
    return False, f"the hybrid refines only {' and '.join(names)} runs, not {variant.name}"
  try:
    baselines.require_cv2()
  except InputError as e:
    return False, str(e)
  return True, ""


REFINE_MODES = ("auto", "none", "grabcut")
#: The per-outline files `write` makes (the ones a later call may replace).
_OUTPUT_NAME = re.compile(r"(row|mask|cutout)_\d+(_full)?\.png")


def refinement(mode: str, variant: Variant, have_original: bool) -> bool:
  """Whether to refine the full-resolution outputs with the hybrid: `grabcut` asks for
  it (InputError when impossible), `auto` takes it where the variant and OpenCV allow,
  `none` never."""
  if mode not in REFINE_MODES:
    raise InputError(f"refine must be one of {REFINE_MODES}, got {mode!r}")
  if mode == "none":
    return False
  ok, why = can_refine(variant)
  if mode == "grabcut" and not (ok and have_original):
    raise InputError(f"--refine=grabcut: {why or 'the run needs its original image'}")
  if not ok and variant.refinable:
    logging.info("full-resolution outputs not refined with GrabCut: %s", why)
  return ok and have_original


class Rendered(NamedTuple):
  """The pictures of one answer."""
  row: np.ndarray      # the three panels side by side, enlarged by `zoom`
  mask: np.ndarray     # (S, S) uint8, 255 = object
  cutout: np.ndarray   # (S, S, 4) uint8 RGBA


def render(image: np.ndarray, outline: np.ndarray, res: Segmentation, k: int,
           zoom: int = 2) -> Rendered:
  """The Fig. 10 row, mask and cut-out of result `k` (shared with the web page)."""
  if not isinstance(zoom, int) or zoom < 1:
    raise InputError(f"zoom must be a positive integer, got {zoom!r}")
  up = lambda a: np.kron(figures.to_uint8(a), np.ones((zoom, zoom, 1), np.uint8))
  block = image.shape[0] // res.input_thumbnail.shape[-2]  # 10 (paper) or 1 (snap)
  panels = [outline_overlay(image, outline),
            np.kron(res.input_thumbnail[k], np.ones((block, block, 1), np.uint8)),
            figures.to_uint8(res.output[k])]
  mask = res.mask[k].astype(np.uint8) * 255
  return Rendered(np.concatenate([up(p) for p in panels], axis=1), mask, rgba(image, mask > 0))


def write(out: str, image: np.ndarray, outlines: list[tuple[str, np.ndarray]],
          res: Segmentation, original: Optional[np.ndarray], crop_box, refine: bool,
          zoom: int = 2, soft_edges: bool = False) -> list[str]:
  """Writes every outline's row, mask and cut-out (and their full-resolution versions
  when `original` is given; refined by the hybrid when `refine`, the cut-out's alpha
  soft at the edge with `soft_edges`) to `out`, then
  `rows.png`, replacing an earlier call's outputs as a whole (its files for outlines
  this call does not have are removed; other files are left alone). Returns one line
  per outline saying what it covers."""
  if os.path.exists(out) and not os.path.isdir(out):
    raise InputError(f"--out {out} is a file, not a folder")
  files, lines = {}, []
  for k, (name, outline) in enumerate(outlines):
    r = render(image, outline, res, k, zoom)
    files.update({f"row_{k}.png": r.row, f"mask_{k}.png": r.mask, f"cutout_{k}.png": r.cutout})
    if original is not None:
      soft = res.mask[k] if res.probability is None else res.probability[k]
      big = corrected_full_resolution(outline, soft, original, crop_box, hybrid=refine)
      files[f"mask_{k}_full.png"] = big.astype(np.uint8) * 255
      files[f"cutout_{k}_full.png"] = rgba(image_lib.crop_to_box(original, crop_box), big,
                                           soft_edges)
    lines.append(f"{k}: {name}: mask covers {res.mask[k].mean():.1%} of the "
                 f"{image.shape[0]}x{image.shape[1]} image"
                 + ("; full resolution refined with GrabCut" if refine else ""))
  os.makedirs(out, exist_ok=True)
  for name, array in files.items():
    figures.save_png(array, os.path.join(out, name))
  figures.image_grid([[files[f"row_{k}.png"] for k in range(len(outlines))]],
                     os.path.join(out, "rows.png"))
  for name in os.listdir(out):
    if _OUTPUT_NAME.fullmatch(name) and name not in files:
      os.remove(os.path.join(out, name))
  return lines
