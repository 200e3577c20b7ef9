"""Summaries of evaluation rows (CSV dicts) shared by `evaluate` and `compare`."""
from __future__ import annotations

import csv

import numpy as np

from singleseg_jax.evaluation import metrics as M

#: Columns of results.csv (one row per image x method x outline) and images.csv.
FIELDS = ("image", "method", "variant", "d", "sigma", "vertices", "seed", "side", "outline_iou",
          "outline_iou_full", "iou", "bf", "bf_precision", "bf_recall", "iou_full", "bf_full",
          "seconds", "fit_seconds", "fit_epochs", "note")
IMAGE_FIELDS = ("image", "status", "height", "width", "side", "object_fraction", "fit_seconds",
                "fit_epochs", "fit_stopped", "outlines", "eval_seconds", "reason")


def fmt(mean, half, digits=3):
  if not np.isfinite(mean):
    return "–"
  if not np.isfinite(half):
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} ± {half:.{digits}f}"


def per_image_means(rows, key, where=lambda r: True):
  by = {}
  for r in rows:
    if where(r) and r[key] != "" and np.isfinite(float(r[key])):
      by.setdefault(r["image"], []).append(float(r[key]))
  return {k: float(np.mean(v)) for k, v in by.items()}


def ci(rows, key, where=lambda r: True):
  """Mean and 95% t half-width over per-image means (rows of one image are not
  independent: they share the image, the net and the ground truth)."""
  means = per_image_means(rows, key, where)
  return (*M.summarise_ci(list(means.values())), len(means))


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))
