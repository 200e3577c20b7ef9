"""The evaluation's reports: summary.md and the plot's series of one run, and the
comparison table of several runs (rows of results.csv in, tables out).

Every ± is a 95% Student-t interval over per-image means: the outlines of one image
share its net and ground truth, so images are the independent units.
"""
from __future__ import annotations

import os

import numpy as np

from singleseg_jax import figures
from singleseg_jax.errors import InputError
from singleseg_jax.tables import atomic_write, fmt, markdown_table, mean_ci, read_csv

#: Columns of results.csv (one row per image x method x outline) and images.csv.
RESULT_FIELDS = ("image", "method", "variant", "d", "sigma", "vertices", "seed", "side",
                 "outline_iou", "outline_iou_full", "iou", "bf", "bf_precision", "bf_recall",
                 "iou_full", "bf_full", "seconds", "fit_seconds", "fit_epochs", "note")
IMAGE_FIELDS = ("image", "status", "height", "width", "side", "object_fraction", "fit_seconds",
                "fit_epochs", "fit_stopped", "fit_val_mse", "outlines", "eval_seconds", "reason")
#: The columns that identify one outline of one image across runs.
OUTLINE_KEY = ("image", "d", "sigma", "vertices", "seed")


def per_image_means(rows, key, where=lambda r: True) -> dict:
  """{image: mean of column `key` over its rows that pass `where`} (blanks skipped)."""
  by = {}
  for r in rows:
    if where(r) and r[key] != "" and np.isfinite(float(r[key])):
      by.setdefault(r["image"], []).append(float(r[key]))
  return {k: float(np.mean(v)) for k, v in by.items()}


def ci(rows, key, where=lambda r: True) -> tuple[float, float, int]:
  """(mean, 95% half-width, images) of column `key` over per-image means."""
  means = per_image_means(rows, key, where)
  return (*mean_ci(means.values()), len(means))


def paired(rows_a, rows_b, key) -> tuple[float, float]:
  """Mean and 95% half-width of the per-image differences a - b of column `key`."""
  a, b = per_image_means(rows_a, key), per_image_means(rows_b, key)
  return mean_ci([a[k] - b[k] for k in a if k in b])


def summary_markdown(rows, image_rows, skipped, methods, meta, size: int) -> str:
  """summary.md of one evaluation run whose nets answer at `size` x `size`."""
  lines = ["# Sloppy-outline evaluation", ""]
  lines += [f"- {k}: {v}" for k, v in meta.items()]
  done = [r for r in image_rows if r["status"] == "ok"]
  lines += [f"- images evaluated: {len(done)}; skipped or failed: "
            f"{len(image_rows) - len(done)} (see skipped.txt); outline settings skipped: "
            f"{len(skipped)}", f"- rows: {len(rows)}", ""]
  lines += ["Every ± is a 95% Student-t interval over per-image means (the outlines of one "
            "image share its net and ground truth, so images are the independent units). "
            f"IoU and boundary F ignore the 128 band. *{size}* is the crop at the run's "
            f"{size}x{size}; *full* the original crop (the `_full` methods answer at full "
            f"resolution; the others at {size}x{size}, sized up by bicubic imresize, "
            "threshold 1/2). "
            "Time is the median seconds per segmentation (net: one `segment` call after "
            "compilation; fits are listed below).", ""]
  outline_rows = [r for r in rows if r["method"] == methods[0]]
  table = [["*(outline's own IoU)*", fmt(*ci(outline_rows, "outline_iou")[:2]), "",
            fmt(*ci(outline_rows, "outline_iou_full")[:2]), "", ""]]
  for m in methods:
    sel = lambda r, m=m: r["method"] == m
    ms = [float(r["seconds"]) for r in rows if sel(r)]
    table.append([m] + [fmt(*ci(rows, k, sel)[:2]) for k in ("iou", "bf", "iou_full", "bf_full")]
                 + [f"{1000 * np.median(ms):.1f}" if ms else "–"])
  lines += ["## All outlines", ""]
  lines += markdown_table(["method", f"IoU {size}", f"BF {size}", "IoU full", "BF full",
                           "time/seg (ms)"], table)
  lines.append("")
  ds = sorted({float(r["d"]) for r in rows})
  for key, title in (("iou_full", "IoU (full resolution) by outline offset d"),
                     ("iou", f"IoU ({size}x{size}) by outline offset d")):
    okey = "outline_iou_full" if key == "iou_full" else "outline_iou"
    table = [["*(outline's own IoU)*"] + [
        fmt(*ci(outline_rows, okey, lambda r, d=d: float(r["d"]) == d)[:2], 2) for d in ds]]
    table += [[m] + [fmt(*ci(rows, key, lambda r, m=m, d=d: r["method"] == m
                               and float(r["d"]) == d)[:2], 2) for d in ds] for m in methods]
    lines += [f"## {title}", "",
              "d is in pixels at 100x100 (negative: the outline lies inside the object); "
              "averaged over sigma, vertices and seeds.", ""]
    lines += markdown_table(["method"] + [f"d={d:g}" for d in ds], table)
    lines.append("")
  sigmas = sorted({float(r["sigma"]) for r in rows})
  if len(sigmas) > 1:
    table = [[m] + [fmt(*ci(rows, "iou_full", lambda r, m=m, s=s: r["method"] == m
                              and float(r["sigma"]) == s)[:2], 3) for s in sigmas]
             for m in methods]
    lines += ["## IoU (full resolution) by vertex jitter sigma", ""]
    lines += markdown_table(["method"] + [f"sigma={s:g}" for s in sigmas], table)
    lines.append("")
  if "net" in methods and len(methods) > 1:
    net = [r for r in rows if r["method"] == "net"]
    table = [[m] + [fmt(*paired([r for r in rows if r["method"] == m], net, key))
                    for key in ("iou", "iou_full", "bf_full")]
             for m in methods if m != "net"]
    lines += ["## Paired differences: method minus net", "",
              "Per image, the mean over the same outlines of (method − net); positive means "
              "the method beats the net.", ""]
    lines += markdown_table(["method", f"Δ IoU {size}", "Δ IoU full", "Δ BF full"], table)
    lines.append("")
  if done:
    fits = [float(r["fit_seconds"]) for r in done if r["fit_seconds"] != ""]
    table = []
    for r in done:
      means = {m: per_image_means(rows, "iou_full", lambda x, m=m: x["method"] == m
                                  ).get(r["image"], float("nan")) for m in methods}
      others = {m: v for m, v in means.items() if m != "net"}
      best = max(others, key=lambda m: others[m]) if others else None
      table.append([r["image"], r["side"], f"{float(r['object_fraction']):.1%}",
                    r["fit_seconds"], r["fit_epochs"], r["fit_stopped"],
                    r.get("fit_val_mse") or "–",
                    f"{means.get('net', float('nan')):.3f}",
                    f"{best} {others[best]:.3f}" if best else "–"])
    lines += ["## Per image", ""]
    lines += markdown_table(["image", "side", "object", "fit (s)", "epochs", "stopped",
                             "best val MSE", "net IoU full", "best baseline IoU full"], table)
    if fits:
      lines += ["", f"Fit time per image: mean {np.mean(fits):.1f} s, median "
                f"{np.median(fits):.1f} s (first image includes compilation)."]
    lines.append("")
  return "\n".join(lines)


def iou_vs_error_series(rows, methods) -> dict:
  """What `figures.iou_vs_error` draws: per method the mean and half-width of IoU at
  each offset d, and the bin means of IoU against the outline's own IoU (bins of 0.05,
  at least 3 outlines each)."""
  ds = sorted({float(r["d"]) for r in rows})
  outline_rows = [r for r in rows if r["method"] == methods[0]]
  series = {"d": ds, "methods": {},
            "outline": [ci(outline_rows, "outline_iou_full", lambda r, d=d: float(r["d"]) == d)[0]
                        for d in ds]}
  edges = np.linspace(0, 1, 21)
  for m in methods:
    mean_ci_d = [ci(rows, "iou_full", lambda r, m=m, d=d: r["method"] == m
                    and float(r["d"]) == d)[:2] for d in ds]
    sel = [r for r in rows if r["method"] == m]
    ox = np.array([float(r["outline_iou_full"]) for r in sel])
    oy = np.array([float(r["iou_full"]) for r in sel])
    bins = [(lo <= ox) & (ox < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    series["methods"][m] = {
        "mean": np.array([c[0] for c in mean_ci_d]),
        "half": np.nan_to_num(np.array([c[1] for c in mean_ci_d])),
        "bin_x": [ox[b].mean() for b in bins if b.sum() >= 3],
        "bin_y": [oy[b].mean() for b in bins if b.sum() >= 3]}
  return series


def write_reports(out, methods, skipped, meta, size: int) -> None:
  """summary.md, iou_vs_error.png and skipped.txt from the run's CSV files in `out`."""
  rows = read_csv(os.path.join(out, "results.csv"))
  image_rows = read_csv(os.path.join(out, "images.csv"))
  atomic_write(os.path.join(out, "summary.md"),
               summary_markdown(rows, image_rows, skipped, methods, meta, size))
  if rows:
    figures.iou_vs_error(iou_vs_error_series(rows, methods),
                         os.path.join(out, "iou_vs_error.png"))
  lines = [f"{r['image']}: {r['status']}: {r['reason']}\n" for r in image_rows
           if r["status"] != "ok"]
  atomic_write(os.path.join(out, "skipped.txt"),
               "".join(lines) + "".join(f"outline {line}\n" for line in skipped))


def load_run(run: str) -> tuple[list[dict], list[dict]]:
  """(results.csv rows, images.csv rows) of an evaluation output directory."""
  try:
    return (read_csv(os.path.join(run, "results.csv")),
            read_csv(os.path.join(run, "images.csv")))
  except OSError as e:
    raise InputError(f"{run} is not an evaluation output ({e.strerror}: {e.filename})") \
        from None


def comparison(runs: list[str], labels: list[str], reference: str,
               default_variant: str, common_images: bool = False) -> list[dict]:
  """One row per method over several evaluation runs: the nets of every run, then each
  baseline once (from the first run that has it), with the paired IoU difference to
  `reference`. Runs must hold the same (image, outline) set; with `common_images`, each
  run is first cut to the images every run has (a run stopped early, or made with
  --max_images), and the outlines must then agree."""
  loaded = [load_run(r) for r in runs]
  if common_images:
    keep = set.intersection(*({r["image"] for r in rows} for rows, _ in loaded))
    if not keep:
      raise InputError(f"the runs {', '.join(runs)} have no image in common")
    loaded = [([r for r in rows if r["image"] in keep], [r for r in images if r["image"] in keep])
              for rows, images in loaded]
  settings = [{tuple(r[k] for k in OUTLINE_KEY) for r in rows} for rows, _ in loaded]
  for run, s in zip(runs[1:], settings[1:]):
    if s != settings[0]:
      raise InputError(f"{run} used other images or outlines than {runs[0]}: "
                       "compare runs made with the same flags")
  groups = []  # (label, rows, image rows)
  for i, (run, (rows, images)) in enumerate(zip(runs, loaded)):
    net = [r for r in rows if r["method"] == "net"]
    if net:
      label = labels[i] if i < len(labels) else (
          f"net: {net[0].get('variant') or default_variant} "
          f"({os.path.basename(os.path.normpath(run))})")
      # Fit time and val MSE over the images this net was scored on (an image that
      # failed after its fit has a fit but no rows).
      scored = {r["image"] for r in net}
      groups.append((label, net, [r for r in images if r["image"] in scored
                                  and r.get("status", "ok") == "ok"]))
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
      diff = paired(rows, ref, "iou_full")
    fits = [float(r["fit_seconds"]) for r in images or [] if r.get("fit_seconds")]
    val = [float(r["fit_val_mse"]) for r in images or [] if r.get("fit_val_mse")]
    secs = [float(r["seconds"]) for r in rows]
    out.append({"method": label, "images": n, "iou_full": iou, "iou_half": half,
                "bf_full": bf, "bf_half": bf_half, "diff": diff[0], "diff_half": diff[1],
                "fit_s": float(np.mean(fits)) if fits else float("nan"),
                "val_mse": float(np.mean(val)) if val else float("nan"),
                "segment_ms": 1000 * float(np.median(secs)) if secs else float("nan")})
  return out


def comparison_markdown(rows: list[dict], reference: str) -> str:
  """The comparison as a markdown table."""
  table = [[r["method"], str(r["images"]), fmt(r["iou_full"], r["iou_half"]),
            fmt(r["bf_full"], r["bf_half"]),
            fmt(r["diff"], r["diff_half"]),
            f"{r['fit_s']:.1f}" if np.isfinite(r["fit_s"]) else "–",
            f"{r['val_mse']:.5f}" if np.isfinite(r["val_mse"]) else "–", f"{r['segment_ms']:.1f}"]
           for r in rows]
  return "\n".join(markdown_table(["method", "images", "IoU full", "BF full",
                                   f"IoU − {reference}", "fit (s/image)", "best val MSE",
                                   "segment (ms)"],
                                  table)) + "\n"
