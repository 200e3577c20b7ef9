"""Ablation table over evaluation runs: python -m experiments.compare --runs=A,B --out=DIR

Each run is an `experiments.evaluate` output directory made with the same data,
outline flags and seeds (checked: the same (image, d, sigma, vertices, seed) set), one
per net variant or config. The table lists every run's net (labelled by --labels, or
the run's variant and directory) and every baseline once (from the first run that has
it): mean IoU and boundary F at full resolution with 95% intervals over images, the
paired difference in IoU to the strongest baseline (--reference), the mean fit time
per image and the median time per segmentation. Writes DIR/ablation.md and
DIR/ablation.csv.
"""
from __future__ import annotations

import csv
import os

import numpy as np
from absl import flags

import singleseg_jax as ss
from experiments import cli
from experiments.reports import ci, fmt, per_image_means, read_csv
from singleseg_jax.evaluation import metrics as M

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "experiments.evaluate output directories.")
flags.DEFINE_list("labels", [], "A label per run for its net (default: variant (dir)).")
flags.DEFINE_string("reference", "grabcut_trimap_full", "Baseline for the paired column.")
flags.DEFINE_string("out", None, "Output directory.")
flags.mark_flags_as_required(["runs", "out"])

KEY = ("image", "d", "sigma", "vertices", "seed")


def load(run: str) -> tuple[list[dict], list[dict]]:
  try:
    return (read_csv(os.path.join(run, "results.csv")),
            read_csv(os.path.join(run, "images.csv")))
  except OSError as e:
    raise ss.InputError(f"{run} is not an evaluation output ({e.strerror}: {e.filename})") \
        from None


def table(runs: list[str], labels: list[str], reference: str) -> list[dict]:
  """One row per method: the nets of every run, then the baselines."""
  loaded = [load(r) for r in runs]
  settings = [{tuple(r[k] for k in KEY) for r in rows} for rows, _ in loaded]
  for run, s in zip(runs[1:], settings[1:]):
    if s != settings[0]:
      raise ss.InputError(f"{run} used other images or outlines than {runs[0]}: "
                          "compare runs made with the same flags")
  groups = []  # (label, rows, image rows)
  for i, (run, (rows, images)) in enumerate(zip(runs, loaded)):
    net = [r for r in rows if r["method"] == "net"]
    if net:
      label = labels[i] if i < len(labels) else f"net: {net[0].get('variant') or 'paper'} " \
                                                  f"({os.path.basename(os.path.normpath(run))})"
      groups.append((label, net, images))
  seen = set()
  for rows, images in loaded:
    for m in dict.fromkeys(r["method"] for r in rows):
      if m != "net" and m not in seen:
        seen.add(m)
        groups.append((m, [r for r in rows if r["method"] == m], None))
  ref = next((g[1] for g in groups if g[0] == reference), None)
  out = []
  for label, rows, images in groups:
    iou, half, n = ci(rows, "iou_full")
    bf, bf_half, _ = ci(rows, "bf_full")
    diff = (float("nan"), float("nan"))
    if ref is not None and label != reference:
      a, b = per_image_means(rows, "iou_full"), per_image_means(ref, "iou_full")
      diff = M.summarise_ci([a[k] - b[k] for k in a if k in b])
    fits = [float(r["fit_seconds"]) for r in images or [] if r.get("fit_seconds")]
    secs = [float(r["seconds"]) for r in rows]
    out.append({"method": label, "images": n, "iou_full": iou, "iou_half": half,
                "bf_full": bf, "bf_half": bf_half, "diff": diff[0], "diff_half": diff[1],
                "fit_s": float(np.mean(fits)) if fits else float("nan"),
                "segment_ms": 1000 * float(np.median(secs)) if secs else float("nan")})
  return out


def markdown(rows: list[dict], reference: str) -> str:
  lines = ["| method | IoU full | BF full | IoU − " + reference + " | fit (s/image) | "
           "segment (ms) |", "|---|---|---|---|---|---|"]
  for r in rows:
    fit = f"{r['fit_s']:.1f}" if np.isfinite(r["fit_s"]) else "–"
    lines.append(f"| {r['method']} | {fmt(r['iou_full'], r['iou_half'])} | "
                 f"{fmt(r['bf_full'], r['bf_half'])} | {fmt(r['diff'], r['diff_half'])} | "
                 f"{fit} | {r['segment_ms']:.1f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  rows = table(FLAGS.runs, FLAGS.labels, FLAGS.reference)
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "ablation.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  text = markdown(rows, FLAGS.reference)
  with open(os.path.join(FLAGS.out, "ablation.md"), "w") as f:
    f.write("# Ablation: " + ", ".join(FLAGS.runs) + "\n\nEvery ± is a 95% Student-t "
            "interval over per-image means; the paired column is per image, the same "
            "outlines.\n\n" + text)
  print(text)


if __name__ == "__main__":
  cli.run(main)
