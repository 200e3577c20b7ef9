"""Sloppy-outline benchmark: python -m experiments.evaluate --data_dir=DIR --out=OUT

Measures the paper's claim that a sloppy outline gives the same segmentation (because
the net only sees the outline on the 10x10 thumbnail) against simple baselines and
GrabCut on the same simulated outlines.

DIR holds images/NAME.(jpg|jpeg|png) and masks/NAME.png (255 object, 0 background,
128 an uncertain band that no metric counts). Per image:

1. Square crop (--crop, centre by default; `top_left` is the paper's), 100x100 image
   and 10x10 thumbnail, as `singleseg_jax.prepare_image`. The ground truth is cropped
   alike and taken to 100x100 by `evaluation.metrics.downsample_labels`. An image
   whose cropped ground truth is under 1% object is skipped and listed.
2. One net fitted to the 100x100 crop with `singleseg_jax.fit.fit` and the options of
   `experiments.train.fit_options(--config)` (default experiments/configs/evaluate.py,
   a shorter CPU schedule: see its docstring). The best-val-loss state is used.
3. Outlines from the 100x100 ground truth (band pixels given to the nearer side):
   offset by d pixels, traced, --vertices kept evenly, jittered by N(0, sigma^2), filled
   (`evaluation.outlines.simulate_outline`), --seeds per (d, sigma, vertices).
4. Methods on each outline:
     net                  the config's net (`variant`: the seed's method, or snap):
                          `singleseg_jax.segment`; a snap net's probability is sized
                          up to full resolution before the threshold
     outline              the outline itself
     thumbnail_nearest    outline -> 10x10 as the net sees it -> 100x100, nearest
     thumbnail_bicubic    the same, sized up by bicubic imresize, threshold 1/2
     grabcut_100          GrabCut on the 100x100 crop: inside probable fg, outside bg
     grabcut_full         the same on the crop at its original resolution
     grabcut_trimap_full  full resolution; inside probable fg, a --trimap_band pixel
                          band outside probable bg, the rest bg
     net_grabcut_full     a hybrid: grabcut_trimap_full started from the net's
                          full-resolution mask instead of the outline (needs `net`;
                          its time adds the net's)
     union_grabcut_full   the same started from the outline united with the net's
                          mask (the net may only extend the outline; GrabCut trims)
   GrabCut runs --grabcut_iterations (5) iterations. Full-resolution outlines are the
   same polygons scaled by side/100 and rasterised at full size.
5. Scores on the 100x100 crop and on the original crop: IoU and boundary F (tolerance
   --bf_tolerance pixels at 100x100, scaled by side/100 at full size), the band
   ignored. 100x100 masks go to full size by bicubic imresize and a threshold of one
   half (as `experiments.cutouts.full_resolution`), full-size masks to 100x100 alike.

OUT receives results.csv (one row per image x method x setting x seed), images.csv
(one row per image: size, fit time and epochs, status), summary.md (means with 95%
intervals per method, per d and per sigma, paired differences to the net),
iou_vs_error.png and skipped.txt. Rows are appended after every image, so a killed
run keeps what it finished. A failure on one image is logged and listed; the rest go on.
"""
from __future__ import annotations

import csv
import os
import sys
import time
import traceback

import jax
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

import singleseg_jax as ss
from experiments import cli, outline_protocol, train
from experiments.outline_protocol import (CV2_METHODS, HYBRID_METHODS, METHODS,
                                          MIN_OBJECT_FRACTION, NetRunner, Setting,
                                          evaluate_image, fit_net, load_case)
from experiments.reports import FIELDS, IMAGE_FIELDS, ci, fmt, per_image_means, read_csv
from singleseg_jax import evaluation as ev
from singleseg_jax.evaluation import metrics as M
IMAGE_EXTS = (".jpg", ".jpeg", ".png")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "experiments/configs/evaluate.py",
                                "Fit configuration (experiments/configs/*.py).")
flags.DEFINE_string("data_dir", None, "Directory with images/ and masks/.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_enum("crop", "center", list(ss.image.CROPS), "Square crop of each image.")
flags.DEFINE_list("d_values", ["-6", "-4", "-2", "0", "2", "4", "6", "8"],
                  "Outline offsets in pixels at 100x100 (negative: inside the object).")
flags.DEFINE_list("sigmas", ["0", "2"], "Vertex jitter (pixels at 100x100).")
flags.DEFINE_list("vertices", ["20"], "Vertices kept per outline (0: every traced vertex).")
flags.DEFINE_integer("seeds", 3, "Outlines per (d, sigma, vertices) setting.")
flags.DEFINE_integer("max_images", 0, "Evaluate at most this many images (0: all).")
flags.DEFINE_list("methods", list(METHODS), "Methods to run.")
flags.DEFINE_float("bf_tolerance", outline_protocol.BF_TOLERANCE,
                   "Boundary F tolerance in pixels at 100x100.")
flags.DEFINE_integer("grabcut_iterations", outline_protocol.GRABCUT_ITERATIONS,
                     "GrabCut iterations.")
flags.DEFINE_float("trimap_band", outline_protocol.TRIMAP_BAND,
                   "Probable-background band (full-resolution pixels).")
flags.mark_flags_as_required(["data_dir", "out"])


def _floats(values, name):
  try:
    return [float(v) for v in values]
  except ValueError:
    raise ss.InputError(f"--{name} must be a comma-separated list of numbers") from None


def _ints(values, name, low):
  try:
    out = [int(v) for v in values]
  except ValueError:
    raise ss.InputError(f"--{name} must be a comma-separated list of integers") from None
  if any(v < low for v in out):
    raise ss.InputError(f"--{name} values must be >= {low}")
  return out


def find_images(data_dir: str) -> list[tuple[str, str, str | None]]:
  """(name, image path, mask path or None) for every image, sorted by name."""
  img_dir, mask_dir = os.path.join(data_dir, "images"), os.path.join(data_dir, "masks")
  if not os.path.isdir(img_dir):
    raise ss.InputError(f"{data_dir} has no images/ directory")
  found = []
  for fn in sorted(os.listdir(img_dir)):
    stem, ext = os.path.splitext(fn)
    if ext.lower() not in IMAGE_EXTS:
      continue
    mask = os.path.join(mask_dir, stem + ".png")
    found.append((stem, os.path.join(img_dir, fn), mask if os.path.exists(mask) else None))
  if not found:
    raise ss.InputError(f"{img_dir} holds no .jpg or .png image")
  return found


# ----------------------------------------------------------------------------- output


def summary_markdown(rows, image_rows, skipped, methods, meta) -> str:
  lines = ["# Sloppy-outline evaluation", ""]
  lines += [f"- {k}: {v}" for k, v in meta.items()]
  done = [r for r in image_rows if r["status"] == "ok"]
  lines += [f"- images evaluated: {len(done)}; skipped or failed: "
            f"{len(image_rows) - len(done)} (see skipped.txt); outline settings skipped: "
            f"{len(skipped)}", f"- rows: {len(rows)}", ""]
  lines += ["Every ± is a 95% Student-t interval over per-image means (the outlines of one "
            "image share its net and ground truth, so images are the independent units). "
            "IoU and boundary F ignore the 128 band. *100* is the 100x100 crop; *full* the "
            "original crop (100x100 answers sized up by bicubic imresize, threshold 1/2). "
            "Time is the median seconds per segmentation (net: one `segment` call after "
            "compilation; fits are listed below).", ""]
  lines += ["## All outlines", "",
            "| method | IoU 100 | BF 100 | IoU full | BF full | time/seg (ms) |",
            "|---|---|---|---|---|---|"]
  outline_rows = [r for r in rows if r["method"] == methods[0]]
  m_oiu = ci(outline_rows, "outline_iou")
  m_oiuf = ci(outline_rows, "outline_iou_full")
  lines.append(f"| *(outline's own IoU)* | {fmt(*m_oiu[:2])} | | {fmt(*m_oiuf[:2])} | | |")
  for m in methods:
    sel = lambda r, m=m: r["method"] == m
    ms = [float(r["seconds"]) for r in rows if sel(r)]
    t = f"{1000 * np.median(ms):.1f}" if ms else "–"
    cells = [fmt(*ci(rows, k, sel)[:2]) for k in ("iou", "bf", "iou_full", "bf_full")]
    lines.append(f"| {m} | " + " | ".join(cells) + f" | {t} |")
  lines.append("")
  ds = sorted({float(r["d"]) for r in rows})
  for key, title in (("iou_full", "IoU (full resolution) by outline offset d"),
                     ("iou", "IoU (100x100) by outline offset d")):
    lines += [f"## {title}", "",
              "d is in pixels at 100x100 (negative: the outline lies inside the object); "
              "averaged over sigma, vertices and seeds.", "",
              "| method | " + " | ".join(f"d={d:g}" for d in ds) + " |",
              "|---|" + "---|" * len(ds)]
    okey = "outline_iou_full" if key == "iou_full" else "outline_iou"
    cells = [fmt(*ci(outline_rows, okey, lambda r, d=d: float(r["d"]) == d)[:2], 2)
             for d in ds]
    lines.append("| *(outline's own IoU)* | " + " | ".join(cells) + " |")
    for m in methods:
      cells = [fmt(*ci(rows, key, lambda r, m=m, d=d: r["method"] == m
                          and float(r["d"]) == d)[:2], 2) for d in ds]
      lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
  sigmas = sorted({float(r["sigma"]) for r in rows})
  if len(sigmas) > 1:
    lines += ["## IoU (full resolution) by vertex jitter sigma", "",
              "| method | " + " | ".join(f"sigma={s:g}" for s in sigmas) + " |",
              "|---|" + "---|" * len(sigmas)]
    for m in methods:
      cells = [fmt(*ci(rows, "iou_full", lambda r, m=m, s=s: r["method"] == m
                          and float(r["sigma"]) == s)[:2], 3) for s in sigmas]
      lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
  if "net" in methods and len(methods) > 1:
    lines += ["## Paired differences: method minus net", "",
              "Per image, the mean over the same outlines of (method − net); positive means "
              "the method beats the net.", "",
              "| method | Δ IoU 100 | Δ IoU full | Δ BF full |", "|---|---|---|---|"]
    for m in methods:
      if m == "net":
        continue
      cells = []
      for key in ("iou", "iou_full", "bf_full"):
        net_means = per_image_means(rows, key, lambda r: r["method"] == "net")
        other = per_image_means(rows, key, lambda r, m=m: r["method"] == m)
        diffs = [other[k] - net_means[k] for k in net_means if k in other]
        cells.append(fmt(*M.summarise_ci(diffs)))
      lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append("")
  if done:
    fits = [float(r["fit_seconds"]) for r in done if r["fit_seconds"] != ""]
    lines += ["## Per image", "",
              "| image | side | object | fit (s) | epochs | stopped | net IoU full | "
              "best baseline IoU full |", "|---|---|---|---|---|---|---|---|"]
    for r in done:
      means = {m: per_image_means(rows, "iou_full", lambda x, m=m: x["method"] == m
                                   ).get(r["image"], float("nan")) for m in methods}
      others = {m: v for m, v in means.items() if m != "net"}
      best = max(others, key=lambda m: others[m]) if others else None
      lines.append(f"| {r['image']} | {r['side']} | {float(r['object_fraction']):.1%} | "
                   f"{r['fit_seconds']} | {r['fit_epochs']} | {r['fit_stopped']} | "
                   f"{means.get('net', float('nan')):.3f} | "
                   + (f"{best} {others[best]:.3f}" if best else "–") + " |")
    if fits:
      lines += ["", f"Fit time per image: mean {np.mean(fits):.1f} s, median "
                f"{np.median(fits):.1f} s (first image includes compilation)."]
    lines.append("")
  return "\n".join(lines)


def plot(rows, methods, path):
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
  ds = sorted({float(r["d"]) for r in rows})
  colours = plt.get_cmap("tab10")
  outline_rows = [r for r in rows if r["method"] == methods[0]]
  for i, m in enumerate(methods):
    mean_ci = [ci(rows, "iou_full", lambda r, m=m, d=d: r["method"] == m
                   and float(r["d"]) == d)[:2] for d in ds]
    y = np.array([c[0] for c in mean_ci])
    e = np.nan_to_num(np.array([c[1] for c in mean_ci]))
    axes[0].errorbar(ds, y, yerr=e, marker="o", ms=3, capsize=2, color=colours(i), label=m)
    edges = np.linspace(0, 1, 21)
    xs, ys = [], []
    sel = [r for r in rows if r["method"] == m]
    ox = np.array([float(r["outline_iou_full"]) for r in sel])
    oy = np.array([float(r["iou_full"]) for r in sel])
    for lo, hi in zip(edges[:-1], edges[1:]):
      inb = (ox >= lo) & (ox < hi)
      if inb.sum() >= 3:
        xs.append(ox[inb].mean())
        ys.append(oy[inb].mean())
    axes[1].plot(xs, ys, marker="o", ms=3, color=colours(i), label=m)
  o = [ci(outline_rows, "outline_iou_full", lambda r, d=d: float(r["d"]) == d)[0] for d in ds]
  axes[0].plot(ds, o, ls=":", color="k", label="outline's own IoU")
  axes[0].set_xlabel("outline offset d (pixels at 100x100; < 0 inside the object)")
  axes[0].set_ylabel("IoU at full resolution (mean, 95% CI over images)")
  axes[1].plot([0, 1], [0, 1], ls=":", color="k", lw=1, label="y = outline IoU")
  axes[1].set_xlabel("outline's own IoU (full resolution; bins of 0.05)")
  axes[1].set_ylabel("IoU at full resolution (bin mean)")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  axes[1].legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write_reports(out, methods, skipped, meta):
  rows = read_csv(os.path.join(out, "results.csv"))
  image_rows = read_csv(os.path.join(out, "images.csv"))
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(summary_markdown(rows, image_rows, skipped, methods, meta))
  if rows:
    plot(rows, methods, os.path.join(out, "iou_vs_error.png"))
  with open(os.path.join(out, "skipped.txt"), "w") as f:
    for r in image_rows:
      if r["status"] != "ok":
        f.write(f"{r['image']}: {r['status']}: {r['reason']}\n")
    for line in skipped:
      f.write(f"outline {line}\n")


# ----------------------------------------------------------------------------- main


def fit_schedule(config) -> str:
  """One line that says how the net was fitted."""
  if config.variant == "snap":
    net = (f"snap: {config.snap_segments} superpixels, hidden {config.snap_hidden}, "
           f"{config.snap_rounds} rounds, {config.snap_steps} updates of batch "
           f"{config.batch_size} per epoch, {config.num_samples} pairs")
  else:
    net = (f"paper: in_channels {config.in_channels}, width {config.width}, "
           f"{config.num_samples} pairs, batch {config.batch_size}")
  return (f"{net}, at most {config.num_epochs} epochs (patience {config.patience}), "
          f"lr {config.learning_rate}, seed {config.seed}")


def _hms(seconds: float) -> str:
  return time.strftime("%H:%M:%S", time.gmtime(max(seconds, 0)))


def main(argv):
  del argv
  config = FLAGS.config
  methods = list(dict.fromkeys(FLAGS.methods))
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    raise ss.InputError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
  for hybrid in HYBRID_METHODS:
    if hybrid in methods and ("net" not in methods
                              or methods.index("net") > methods.index(hybrid)):
      raise ss.InputError(f"--methods: {hybrid} needs net listed before it")
  if CV2_METHODS & set(methods):
    ev.require_cv2()
  train.fit_options(config)  # validates the schedule before any work
  d_values = _floats(FLAGS.d_values, "d_values")
  sigmas = _floats(FLAGS.sigmas, "sigmas")
  if any(s < 0 for s in sigmas):
    raise ss.InputError("--sigmas must be >= 0")
  vertices = _ints(FLAGS.vertices, "vertices", 0)
  if any(0 < v < 3 for v in vertices):
    raise ss.InputError("--vertices must be 0 (all) or at least 3")
  if FLAGS.seeds < 1:
    raise ss.InputError("--seeds must be at least 1")
  settings = [Setting(d, s, k, seed) for d in d_values for s in sigmas for k in vertices
              for seed in range(FLAGS.seeds)]
  images = find_images(FLAGS.data_dir)
  if FLAGS.max_images > 0:
    images = images[:FLAGS.max_images]
  os.makedirs(FLAGS.out, exist_ok=True)
  opts = outline_protocol.options(config.variant, tolerance=FLAGS.bf_tolerance,
                                 iterations=FLAGS.grabcut_iterations, band=FLAGS.trimap_band)
  meta = {"command": " ".join(["python -m experiments.evaluate"] + sys.argv[1:]),
          "data": os.path.abspath(FLAGS.data_dir), "crop": FLAGS.crop,
          "net variant": config.variant,
          "fit schedule": fit_schedule(config),
          "outlines": (f"d in {d_values}, sigma in {sigmas}, vertices in {vertices} "
                       f"(0 = all), {FLAGS.seeds} seeds each: {len(settings)} per image"),
          "boundary F tolerance": f"{FLAGS.bf_tolerance:g} px at 100x100 (x side/100 full)",
          "GrabCut": (f"{FLAGS.grabcut_iterations} iterations; trimap band "
                      f"{FLAGS.trimap_band:g} px at full resolution"),
          "device": jax.devices()[0].device_kind}
  results_path = os.path.join(FLAGS.out, "results.csv")
  images_path = os.path.join(FLAGS.out, "images.csv")
  with open(results_path, "w", newline="") as f:
    csv.DictWriter(f, FIELDS).writeheader()
  with open(images_path, "w", newline="") as f:
    csv.DictWriter(f, IMAGE_FIELDS).writeheader()
  logging.info("evaluating %d image(s) x %d outline(s) x %d method(s) -> %s", len(images),
               len(settings), len(methods), FLAGS.out)
  skipped_settings = []
  t_start = time.perf_counter()
  processed_times = []
  counts = {"ok": 0, "skipped": 0, "failed": 0}
  for i, (name, image_path, mask_path) in enumerate(images):
    t_img = time.perf_counter()
    info = {k: "" for k in IMAGE_FIELDS}
    info["image"] = name
    try:
      if mask_path is None:
        raise _Skip(f"no mask masks/{name}.png")
      case = load_case(name, image_path, mask_path, config, FLAGS.crop)
      info.update(height=case.hw[0], width=case.hw[1], side=case.full.object.shape[0])
      frac = float(case.full.object.mean())
      info["object_fraction"] = f"{frac:.5f}"
      if frac < MIN_OBJECT_FRACTION:
        raise _Skip(f"the {FLAGS.crop} crop keeps {frac:.2%} object (< 1%)")
      logging.info("[%d/%d] %s: %dx%d, %s crop side %d, object %.1f%%; fitting", i + 1,
                   len(images), name, case.hw[1], case.hw[0], FLAGS.crop, info["side"],
                   100 * frac)
      state, fit_s, epochs, reason = fit_net(config, case.prep.image) if "net" in methods \
          else (None, 0.0, 0, "no net")
      info.update(fit_seconds=f"{fit_s:.2f}", fit_epochs=epochs, fit_stopped=reason)
      net = NetRunner(state, case.prep.image, config.seed)
      fit_info = {"fit_seconds": round(fit_s, 3), "fit_epochs": epochs}
      t_eval = time.perf_counter()
      rows, skipped = evaluate_image(case, net, settings, methods, opts, fit_info)
      info.update(status="ok", outlines=len(rows) // len(methods),
                  eval_seconds=f"{time.perf_counter() - t_eval:.2f}")
      skipped_settings += skipped
      with open(results_path, "a", newline="") as f:
        csv.DictWriter(f, FIELDS).writerows(rows)
      counts["ok"] += 1
      processed_times.append(time.perf_counter() - t_img)
      net_iou = np.mean([r["iou_full"] for r in rows if r["method"] == "net"] or [np.nan])
      logging.info("[%d/%d] %s: fit %.1f s (%d epochs, %s); %d outlines in %s s; "
                   "net IoU full %.3f", i + 1, len(images), name, fit_s, epochs, reason,
                   info["outlines"], info["eval_seconds"], net_iou)
    except _Skip as e:
      info.update(status="skipped", reason=str(e))
      counts["skipped"] += 1
      logging.warning("[%d/%d] %s skipped: %s", i + 1, len(images), name, e)
    except Exception as e:  # noqa: BLE001 (one image's failure must not stop the rest)
      info.update(status="failed", reason=f"{type(e).__name__}: {e}".replace("\n", " "))
      counts["failed"] += 1
      logging.error("[%d/%d] %s failed: %s\n%s", i + 1, len(images), name, info["reason"],
                    traceback.format_exc())
    with open(images_path, "a", newline="") as f:
      csv.DictWriter(f, IMAGE_FIELDS).writerow(info)
    elapsed = time.perf_counter() - t_start
    per = np.mean(processed_times) if processed_times else elapsed / (i + 1)
    remaining = len(images) - i - 1
    logging.info("progress %d/%d images (%d ok, %d skipped, %d failed); elapsed %s, "
                 "%.1f s/image, ETA %s", i + 1, len(images), counts["ok"], counts["skipped"],
                 counts["failed"], _hms(elapsed), per, _hms(per * remaining))
  meta["wall time"] = _hms(time.perf_counter() - t_start)
  write_reports(FLAGS.out, methods, skipped_settings, meta)
  print(f"{FLAGS.out}: {counts['ok']} image(s) evaluated, {counts['skipped']} skipped, "
        f"{counts['failed']} failed; see summary.md")


class _Skip(Exception):
  """An image that the protocol leaves out (listed in skipped.txt)."""


if __name__ == "__main__":
  cli.run(main)
