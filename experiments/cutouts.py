"""Outlines from files and boxes, and the pictures made from a segmentation.

Shared by the segment command and the web page; no flags, no file layout of its own.
"""
from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np
from PIL import Image

import singleseg_jax as ss
from experiments import figures

SIDE = 100


def _to_net_frame(points: np.ndarray, frame: str, crop_box) -> np.ndarray:
  """Maps (x, y) points to the 100x100 frame, checking they lie inside it."""
  points = np.asarray(points, np.float64)
  if frame == "original":
    top, left, side = crop_box
    inside = ((points[:, 0] >= left) & (points[:, 0] <= left + side)
              & (points[:, 1] >= top) & (points[:, 1] <= top + side))
    if not inside.all():
      bad = points[~inside][0]
      raise ss.InputError(f"outline point ({bad[0]:g}, {bad[1]:g}) lies outside the cropped "
                          f"square (left {left}, top {top}, side {side})")
    points = (points - [left, top]) * (SIDE / side)
  out = (points < 0) | (points > SIDE)
  if out.any():
    bad = points[out.any(1)][0]
    raise ss.InputError(f"outline point ({bad[0]:g}, {bad[1]:g}) lies outside the "
                        f"{SIDE}x{SIDE} image")
  return points


def _polygon(points, frame, crop_box, name) -> np.ndarray:
  pts = _to_net_frame(np.asarray(points, np.float64).reshape(-1, 2), frame, crop_box)
  x, y = pts[:, 0], pts[:, 1]
  area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
  if area < 1:
    raise ss.InputError(f"{name}: the polygon is degenerate (area {area:.2g} pixels)")
  mask = ss.polygon_mask(pts, SIDE, SIDE)
  if not mask.any():
    raise ss.InputError(f"{name}: the polygon encloses no pixel centre")
  return mask


def _load_json(path: str) -> list:
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise ss.InputError(f"cannot read outline {path}: {e}") from None
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
    raise ss.InputError(f"{path}: expected [[x, y], ...] or a list of such polygons")
  return polygons


def _mask_png(path: str, info: dict) -> np.ndarray:
  if not os.path.exists(path):
    raise ss.InputError(f"outline not found: {path}")
  try:
    m = np.asarray(Image.open(path).convert("L")) > 0
  except OSError as e:
    raise ss.InputError(f"cannot read outline {path}: {e}") from None
  if m.shape == (SIDE, SIDE):
    return m
  if list(m.shape) == list(info["original_hw"]):
    top, left, side = info["crop_box"]
    sq = m[top:top + side, left:left + side].astype(np.float64)[..., None] * 255
    return ss.image.resize_levels(sq, (SIDE, SIDE))[..., 0] >= 128
  raise ss.InputError(f"{path}: mask is {m.shape[1]}x{m.shape[0]}; expected {SIDE}x{SIDE} or "
                      f"the original image's {info['original_hw'][1]}x{info['original_hw'][0]}")


def parse_box(text: str) -> list[float]:
  try:
    x0, y0, x1, y1 = (float(v) for v in text.split(","))
  except ValueError:
    raise ss.InputError(f"--box must be x0,y0,x1,y1, got {text!r}") from None
  if x1 <= x0 or y1 <= y0:
    raise ss.InputError(f"--box {text}: needs x0 < x1 and y0 < y1")
  return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def collect_outlines(outlines, boxes, frame: str, info: dict) -> list[tuple[str, np.ndarray]]:
  """All outlines as (name, 100x100 bool mask); raises InputError before any output."""
  result = []
  for path in outlines:
    if path.lower().endswith(".json"):
      for i, poly in enumerate(_load_json(path)):
        name = f"{os.path.basename(path)}[{i}]"
        result.append((name, _polygon(poly, frame, info["crop_box"], name)))
    else:
      result.append((os.path.basename(path), _mask_png(path, info)))
  for text in boxes:
    pts = np.asarray(parse_box(text))
    if frame == "net":  # a box's far corner is inclusive: pixels x0..x1
      pts = pts + np.array([[0, 0], [1, 0], [1, 1], [0, 1]])
    result.append((f"box {text}", _polygon(pts, frame, info["crop_box"], f"box {text}")))
  if not result:
    raise ss.InputError("give at least one --outline or --box")
  for name, mask in result:
    if not mask.any():
      raise ss.InputError(f"{name}: the outline is empty")
  return result


def outline_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """The image with the outline's boundary drawn in red (the paper's first panel)."""
  m = np.pad(mask, 1)
  interior = m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
  edge = mask & ~interior
  out = image.copy()
  out[edge] = (255, 0, 0)
  return out


def full_resolution(mask: np.ndarray, original: np.ndarray, crop_box) -> tuple[np.ndarray, np.ndarray]:
  """(mask, RGBA cut-out) at the cropped original's resolution (bicubic, threshold 1/2).

  `mask` is bool or a probability in [0, 1] (a snap net's, whose soft edges then place
  the full-resolution border between the 100x100 pixels)."""
  top, left, side = crop_box
  crop = original[top:top + side, left:left + side]
  soft = ss.image.resize_levels(mask.astype(np.float64)[..., None] * 255, (side, side))[..., 0]
  big = soft >= 128
  return big, np.dstack([crop, np.where(big, 255, 0).astype(np.uint8)])


def full_resolution_hybrid(outline: np.ndarray, soft: np.ndarray, original: np.ndarray,
                           crop_box) -> tuple[np.ndarray, np.ndarray]:
  """(mask, RGBA cut-out) at full resolution by the snap + GrabCut hybrid
  (`singleseg_jax.evaluation.union_grabcut`, needs OpenCV): GrabCut with a 5-pixel band
  started from the outline united with the net's mask, both sized up from 100x100."""
  from singleseg_jax import evaluation  # noqa: PLC0415 (OpenCV is optional)

  top, left, side = crop_box
  crop = original[top:top + side, left:left + side]
  net_big, _ = full_resolution(soft, original, crop_box)
  outline_big, _ = full_resolution(outline, original, crop_box)
  big = evaluation.union_grabcut(crop, outline_big, net_big)
  return big, np.dstack([crop, np.where(big, 255, 0).astype(np.uint8)])


def can_refine(variant: str) -> tuple[bool, str]:
  """(whether the hybrid can run for a run of `variant`, why not)."""
  from singleseg_jax import evaluation  # noqa: PLC0415

  if variant != "snap":
    return False, "the hybrid needs a snap run"
  try:
    evaluation.require_cv2()
  except ss.InputError as e:
    return False, str(e)
  return True, ""


class Rendered(NamedTuple):
  row: np.ndarray      # the three panels side by side, enlarged by `zoom`
  mask: np.ndarray     # (100, 100) uint8, 255 = object
  cutout: np.ndarray   # (100, 100, 4) uint8 RGBA


def render(image: np.ndarray, outline: np.ndarray, res: ss.Segmentation, k: int,
           zoom: int = 2) -> Rendered:
  """The Fig. 10 row, mask and cut-out of result `k` (shared with the web page)."""
  up = lambda a: np.kron(figures.to_uint8(a), np.ones((zoom, zoom, 1), np.uint8))
  block = image.shape[0] // res.input_thumbnail.shape[-2]  # 10 (paper) or 1 (snap)
  panels = [outline_overlay(image, outline),
            np.kron(res.input_thumbnail[k], np.ones((block, block, 1), np.uint8)),
            figures.to_uint8(res.output[k])]
  mask = res.mask[k].astype(np.uint8) * 255
  return Rendered(np.concatenate([up(p) for p in panels], axis=1), mask,
                  np.dstack([image, mask]))
