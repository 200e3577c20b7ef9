"""Cut-outs from a fitted run: python -m experiments.segment --workdir=runs/cat --box=...

Outlines (each flag may be repeated; every outline gives one row):
  --outline=FILE.json  a polygon [[x, y], ...] or a list of polygons
  --outline=FILE.png   a mask (non-zero = inside), 100x100 or the original image's size
  --box=x0,y0,x1,y1    a rectangle (corners included)
Coordinates are in the 100x100 frame of the net (--frame=net, the default) or in the
original photo's pixels (--frame=original; they must lie inside the cropped square).

Writes to --out (default WORKDIR/segment): per outline k, `row_k.png` (the paper's
Fig. 10 row: outline on the image | network input, nearest-upsampled | network output),
`mask_k.png` and `cutout_k.png` (RGBA) at 100x100, and `mask_k_full.png` and
`cutout_k_full.png` at the cropped original's resolution; `rows.png` stacks all rows.
All outlines are checked before anything is written.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import flags, logging
from PIL import Image

import singleseg_jax as ss
from experiments import cli, figures, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A run directory written by experiments.main.")
flags.DEFINE_multi_string("outline", [], "Polygon JSON or mask PNG (repeatable).")
flags.DEFINE_multi_string("box", [], "x0,y0,x1,y1 (repeatable).")
flags.DEFINE_enum("frame", "net", ["net", "original"], "Frame of polygon/box coordinates.")
flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/segment).")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to use.")
flags.DEFINE_integer("seed", 0, "Key for the input noise.")
flags.DEFINE_integer("zoom", 2, "Enlargement of the panels in row_k.png.")
flags.mark_flags_as_required(["workdir"])

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
  """(mask, RGBA cut-out) at the cropped original's resolution (bicubic, threshold 1/2)."""
  top, left, side = crop_box
  crop = original[top:top + side, left:left + side]
  soft = ss.image.resize_levels(mask.astype(np.float64)[..., None] * 255, (side, side))[..., 0]
  big = soft >= 128
  return big, np.dstack([crop, np.where(big, 255, 0).astype(np.uint8)])


def main(argv):
  del argv
  config, state, image, info = train.load_run(FLAGS.workdir, FLAGS.checkpoint)
  outlines = collect_outlines(FLAGS.outline, FLAGS.box, FLAGS.frame, info)
  res = ss.segment(state, image, np.stack([m for _, m in outlines]), jax.random.key(FLAGS.seed))
  try:
    original = ss.load_image(info["image"])
  except ss.InputError as e:
    original = None
    logging.warning("full-resolution outputs skipped: %s", e)
  out = FLAGS.out or os.path.join(FLAGS.workdir, "segment")
  os.makedirs(out, exist_ok=True)
  rows, z = [], FLAGS.zoom
  up = lambda a: np.kron(figures.to_uint8(a), np.ones((z, z, 1), np.uint8))
  for k, (name, mask) in enumerate(outlines):
    panels = [outline_overlay(image, mask),
              np.kron(res.input_thumbnail[k], np.ones((10, 10, 1), np.uint8)),
              figures.to_uint8(res.output[k])]
    row = np.concatenate([up(p) for p in panels], axis=1)
    rows.append(row)
    Image.fromarray(row).save(os.path.join(out, f"row_{k}.png"))
    Image.fromarray(res.mask[k].astype(np.uint8) * 255).save(os.path.join(out, f"mask_{k}.png"))
    alpha = res.mask[k].astype(np.uint8)[..., None] * 255
    Image.fromarray(np.dstack([image, alpha])).save(os.path.join(out, f"cutout_{k}.png"))
    if original is not None:
      big, cut = full_resolution(res.mask[k], original, info["crop_box"])
      Image.fromarray(big.astype(np.uint8) * 255).save(os.path.join(out, f"mask_{k}_full.png"))
      Image.fromarray(cut).save(os.path.join(out, f"cutout_{k}_full.png"))
    print(f"{k}: {name}: mask covers {res.mask[k].mean():.1%} of the 100x100 image")
  figures.image_grid([rows], os.path.join(out, "rows.png"))
  print(f"wrote {len(rows)} row(s) to {out}")


if __name__ == "__main__":
  cli.run(main)
