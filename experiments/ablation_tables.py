"""Width-ablation tables over many images: the pure part of `experiments.ablation_summary`.

Rows in, rows and markdown out; no flags, no files written.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np

import singleseg_jax as ss
from experiments.reports import fmt, read_csv
from singleseg_jax.evaluation import metrics as M

FIELDS = ("image", "width", "in_channels", "params", "seeds", "epochs", "best_val_mse", "iou_full")


def expand(patterns: list[str]) -> list[str]:
  """Directories named or matched by the patterns, in order, each once."""
  runs = []
  for p in patterns:
    if any(c in p for c in "*?["):
      hits = [h for h in sorted(glob.glob(p)) if os.path.isdir(h)]
    elif os.path.isdir(p):
      hits = [p]
    else:
      raise ss.InputError(f"--runs: {p} is not a directory")
    runs += [h for h in hits if h not in runs]
  if not runs:
    raise ss.InputError(f"--runs matched no directory: {','.join(patterns)}")
  return runs


def _image_name(run: str) -> str:
  try:
    with open(os.path.join(run, "ablation.json")) as f:
      image = json.load(f)["config"]["image"]
    return os.path.splitext(os.path.basename(image))[0]
  except (OSError, KeyError, ValueError):
    return os.path.basename(os.path.normpath(run))


def load(runs: list[str]) -> list[dict]:
  """One row per image x width: the image's mean over its seeds."""
  rows, layout = [], None
  for run in runs:
    try:
      raw = read_csv(os.path.join(run, "ablation.csv"))
    except OSError as e:
      raise ss.InputError(f"{run} is not an ablate_width output ({e.strerror}: {e.filename})") \
          from None
    if not raw:
      raise ss.InputError(f"{run}/ablation.csv has no rows")
    this = sorted({(float(r["width"]), int(r["seed"])) for r in raw})
    if layout is None:
      layout = this
    elif this != layout:
      raise ss.InputError(f"{run} has other widths or seeds than {runs[0]}: summarise runs "
                          "made with the same --widths and --seeds")
    name = _image_name(run)
    for w in sorted({float(r["width"]) for r in raw}):
      rs = [r for r in raw if float(r["width"]) == w]
      iou = [float(r["iou_full"]) for r in rs if r.get("iou_full", "") != ""]
      rows.append({"image": name, "width": w, "in_channels": int(rs[0]["in_channels"]),
                   "params": int(rs[0]["params"]), "seeds": len(rs),
                   "epochs": float(np.mean([float(r["epochs"]) for r in rs])),
                   "best_val_mse": float(np.mean([float(r["best_val_mse"]) for r in rs])),
                   "iou_full": float(np.mean(iou)) if len(iou) == len(rs) else float("nan")})
  names = [r["image"] for r in rows if r["width"] == rows[0]["width"]]
  if len(set(names)) != len(names):
    raise ss.InputError("two runs are of the same image: give each image once")
  return rows


def has_iou(rows: list[dict]) -> bool:
  """Whether every row has a sloppy-outline IoU (the runs were made with --mask)."""
  return all(np.isfinite(r["iou_full"]) for r in rows)


def _by_image(rows: list[dict], width: float, key: str) -> dict:
  return {r["image"]: r[key] for r in rows if r["width"] == width}


def per_width(rows: list[dict]) -> list[dict]:
  out = []
  for w in sorted({r["width"] for r in rows}):
    rs = [r for r in rows if r["width"] == w]
    out.append({"width": w, "in_channels": rs[0]["in_channels"], "params": rs[0]["params"],
                "images": len(rs), "seeds": rs[0]["seeds"],
                "mse": M.summarise_ci([r["best_val_mse"] for r in rs]),
                "iou": M.summarise_ci([r["iou_full"] for r in rs])})
  return out


def paired(rows: list[dict], narrow: float, wide: float) -> dict:
  """Per-image differences wide - narrow: val MSE relative (%), IoU absolute."""
  m0, m1 = _by_image(rows, narrow, "best_val_mse"), _by_image(rows, wide, "best_val_mse")
  i0, i1 = _by_image(rows, narrow, "iou_full"), _by_image(rows, wide, "iou_full")
  images = sorted(m0)
  dmse = [100.0 * (m1[k] - m0[k]) / m0[k] for k in images]
  diou = [i1[k] - i0[k] for k in images]
  return {"narrow": narrow, "wide": wide, "images": len(images),
          "dmse_pct": M.summarise_ci(dmse), "mse_better": sum(d < 0 for d in dmse),
          "diou": M.summarise_ci(diou), "iou_better": sum(d > 0 for d in diou)}


def markdown(rows: list[dict]) -> list[str]:
  widths = per_width(rows)
  with_iou = has_iou(rows)
  lines = [f"Over {widths[0]['images']} images, {widths[0]['seeds']} seed(s) each; "
           "± is a 95% t interval over images.", "",
           "| width | in_channels | params | best val MSE |" +
           (" sloppy-outline IoU |" if with_iou else ""),
           "| --- | --- | --- | --- |" + (" --- |" if with_iou else "")]
  for w in widths:
    lines.append(f"| {w['width']:g} | {w['in_channels']} | {w['params']:,} | "
                 f"{fmt(*w['mse'], digits=5)} |" + (f" {fmt(*w['iou'])} |" if with_iou else ""))
  lines += ["", "| wider vs narrower | val MSE change | images with lower val MSE |" +
            (" IoU change | images with higher IoU |" if with_iou else ""),
            "| --- | --- | --- |" + (" --- | --- |" if with_iou else "")]
  ws = [w["width"] for w in widths]
  for a, b in zip(ws, ws[1:]):
    p = paired(rows, a, b)
    lines.append(f"| {b:g} vs {a:g} | {fmt(*p['dmse_pct'], digits=1)} % | "
                 f"{p['mse_better']} of {p['images']} |" +
                 (f" {fmt(*p['diou'])} | {p['iou_better']} of {p['images']} |"
                  if with_iou else ""))
  return lines
