"""The sloppy-outline evaluation of a directory of images with ground-truth masks.

Measures the paper's claim that a sloppy outline gives the same segmentation (because
the net only sees the outline on the 10x10 thumbnail) against simple baselines and
GrabCut on the same simulated outlines.

Below, "100x100" and "10x10" are the config's `size` and its thumbnail (the seed's
sides; e.g. 200x200 and 20x20 with configs/cat200.py): every length (d, sigma, the
band, the tolerance) stays in pixels of the 100x100 frame and is scaled by size / 100
on the net's image (`image.frame_length`), so one sweep means the same at any size.

The directory holds images/NAME.(jpg|jpeg|png) and masks/NAME.png (255 object, 0
background, 128 an uncertain band that no metric counts). Per image:

1. Square crop (centre by default; `top_left` is the paper's), 100x100 image and 10x10
   thumbnail, as `image.prepare_image`. The ground truth is cropped alike and taken to
   100x100 by `metrics.downsample_labels`. An image whose cropped ground truth is
   under 1% object is skipped and listed.
2. One net fitted to the 100x100 crop with `fit.fit` and the options of the config
   (`run.fit_options`). The best-val-loss state is used.
3. Outlines from the 100x100 ground truth (band pixels given to the nearer side):
   offset by d pixels, traced, `vertices` kept evenly, jittered by N(0, sigma^2),
   filled (`outlines.simulate_outline`), `seeds` per (d, sigma, vertices).
4. Methods on each outline (`protocol.METHODS`):
     net                  the config's net: `segment`; a probability (snap) is sized
                          up to full resolution before the threshold
     outline              the outline itself
     thumbnail_nearest    outline -> 10x10 as the net sees it -> 100x100, nearest
     thumbnail_bicubic    the same, sized up by bicubic imresize, threshold 1/2
     grabcut_100          GrabCut on the 100x100 crop: inside probable fg, outside bg
     grabcut_full         the same on the crop at its original resolution
     grabcut_trimap_full  full resolution; inside probable fg, a band of `band` pixels
                          (at 100x100, so band x side / 100 at full size) outside
                          probable bg, the rest bg
     net_grabcut_full     a hybrid: grabcut_trimap_full started from the net's
                          full-resolution mask instead of the outline (needs `net`;
                          its time adds the net's)
     union_grabcut_full   the same started from the outline united with the net's
                          mask (the net may only extend the outline; GrabCut trims)
     edgeband_grabcut_full  GrabCut that may move the net's full-resolution boundary
                          by at most `edge_band` pixels at 100x100: sure foreground
                          deeper inside, sure background farther outside (needs `net`)
     grabcut_grown_full   grabcut_trimap_full from the outline grown by the image's
                          estimate of how far inside the object it was drawn
                          (`baselines.outline_offset`; never shrunk)
     outline_superpixels  the superpixels of snap's (config.snap_segments, 100x100)
                          that the outline covers at least half of: snap's selection
                          without its net
   Full-resolution outlines are the same polygons scaled by side/size and rasterised
   at full size.
5. Scores on the 100x100 crop and on the original crop: IoU and boundary F (tolerance
   in pixels at 100x100, scaled by side/100 at full size), the band ignored. 100x100
   masks go to full size by bicubic imresize and a threshold of one half (as
   `cutouts.full_resolution`), full-size masks to 100x100 alike.

The output directory receives results.csv (one row per image x method x setting x
seed), images.csv (one row per image: size, fit time and epochs, best val MSE, status),
summary.md, iou_vs_error.png and skipped.txt. Rows are appended after every image, so a killed run
keeps what it finished. A failure on one image is logged and listed; the rest go on.
"""
from __future__ import annotations

import math
import os
import time
import traceback

import jax
import numpy as np
from absl import logging

from singleseg_jax import image as image_lib
from singleseg_jax import run, tables
from singleseg_jax.errors import InputError
from singleseg_jax.evaluation import baselines, protocol, reports
from singleseg_jax.progress import Progress, hms

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def find_images(data_dir: str) -> list[tuple[str, str, str | None]]:
  """(name, image path, mask path or None) for every image, sorted by name."""
  img_dir, mask_dir = os.path.join(data_dir, "images"), os.path.join(data_dir, "masks")
  if not os.path.isdir(img_dir):
    raise InputError(f"{data_dir} has no images/ directory")
  found = []
  for fn in sorted(os.listdir(img_dir)):
    stem, ext = os.path.splitext(fn)
    if ext.lower() not in IMAGE_EXTS:
      continue
    mask = os.path.join(mask_dir, stem + ".png")
    found.append((stem, os.path.join(img_dir, fn), mask if os.path.exists(mask) else None))
  if not found:
    raise InputError(f"{img_dir} holds no .jpg or .png image")
  return found


def outline_settings(d_values, sigmas, vertices, seeds: int) -> list[protocol.Setting]:
  """Every (d, sigma, vertices, seed) combination; InputError for values out of range."""
  try:
    d_values, sigmas = [float(v) for v in d_values], [float(v) for v in sigmas]
  except ValueError:
    raise InputError("outline offsets and sigmas must be numbers") from None
  try:
    vertices = [int(v) for v in vertices]
  except ValueError:
    raise InputError("--vertices must be a comma-separated list of integers") from None
  if any(s < 0 for s in sigmas):
    raise InputError("--sigmas must be >= 0")
  if any(v < 0 or 0 < v < 3 for v in vertices):
    raise InputError("--vertices must be 0 (all) or at least 3")
  if seeds < 1:
    raise InputError("--seeds must be at least 1")
  return [protocol.Setting(d, s, k, seed) for d in d_values for s in sigmas for k in vertices
          for seed in range(seeds)]


def check_methods(methods) -> list[str]:
  """The methods in order, each once; InputError for unknown ones or a hybrid without
  `net` before it, and when GrabCut methods lack OpenCV."""
  methods = list(dict.fromkeys(methods))
  unknown = [m for m in methods if m not in protocol.METHODS]
  if unknown or not methods:
    raise InputError(f"unknown method(s) {unknown}; choose from {', '.join(protocol.METHODS)}")
  for hybrid in protocol.HYBRID_METHODS:
    if hybrid in methods and ("net" not in methods
                              or methods.index("net") > methods.index(hybrid)):
      raise InputError(f"--methods: {hybrid} needs net listed before it")
  if protocol.CV2_METHODS & set(methods):
    baselines.require_cv2()
  return methods


class _Skip(Exception):
  """An image that the protocol leaves out (listed in skipped.txt)."""


def _evaluate_one(name, image_path, mask_path, config, crop, settings, methods, opts, info):
  if mask_path is None:
    raise _Skip(f"no mask masks/{name}.png")
  case = protocol.load_case(name, image_path, mask_path, config, crop)
  info.update(height=case.hw[0], width=case.hw[1], side=case.full.object.shape[0])
  frac = float(case.full.object.mean())
  info["object_fraction"] = f"{frac:.5f}"
  if frac < protocol.MIN_OBJECT_FRACTION:
    raise _Skip(f"the {crop} crop keeps {frac:.2%} object (< 1%)")
  logging.info("%s: %dx%d, %s crop side %d, object %.1f%%; fitting", name, case.hw[1],
               case.hw[0], crop, info["side"], 100 * frac)
  state, fit_s, epochs, reason, val_mse = protocol.fit_net(config, case.prep.image) \
      if "net" in methods else (None, 0.0, 0, "no net", float("nan"))
  info.update(fit_seconds=f"{fit_s:.2f}", fit_epochs=epochs, fit_stopped=reason,
              fit_val_mse="" if np.isnan(val_mse) else f"{val_mse:.6g}")
  net = protocol.NetRunner(state, case.prep.image, config.seed)
  t_eval = time.perf_counter()
  rows, skipped = protocol.evaluate_image(case, net, settings, methods, opts,
                                          {"fit_seconds": round(fit_s, 3), "fit_epochs": epochs})
  info.update(status="ok", outlines=len(rows) // len(methods),
              eval_seconds=f"{time.perf_counter() - t_eval:.2f}")
  net_iou = np.mean([r["iou_full"] for r in rows if r["method"] == "net"] or [np.nan])
  logging.info("%s: fit %.1f s (%d epochs, %s); %d outlines in %s s; net IoU full %.3f", name,
               fit_s, epochs, reason, info["outlines"], info["eval_seconds"], net_iou)
  return rows, skipped


def evaluate_dataset(config, data_dir: str, out: str, *, settings, methods, crop: str = "center",
                     max_images: int = 0, tolerance: float = protocol.BF_TOLERANCE,
                     iterations: int = baselines.DEFAULT_ITERATIONS,
                     band: float = baselines.DEFAULT_BAND,
                     edge_band: float = baselines.DEFAULT_EDGE_BAND, command: str = "") -> dict:
  """Runs the evaluation (module docstring) and writes its files to `out`; returns the
  counts of images evaluated, skipped and failed. Checks every argument first."""
  methods = check_methods(methods)
  options = run.fit_options(config)  # validates the schedule before any work
  image_lib.crop_square(np.zeros((image_lib.MIN_SIDE,) * 2 + (3,), np.uint8), crop)
  for flag, v in (("trimap_band", band), ("edge_band", edge_band), ("bf_tolerance", tolerance)):
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):  # NaN fails `v < 0`
      raise InputError(f"--{flag} must be a finite number >= 0, got {v!r}")
  if not isinstance(iterations, int) or iterations < 1:
    raise InputError(f"--grabcut_iterations must be a positive integer, got {iterations!r}")
  images = find_images(data_dir)
  if max_images > 0:
    images = images[:max_images]
  os.makedirs(out, exist_ok=True)
  variant = options.variant_impl
  opts = protocol.options(variant.name, tolerance=tolerance, iterations=iterations, band=band,
                          edge_band=edge_band, segments=config.snap_segments)
  meta = {"command": command, "data": os.path.abspath(data_dir), "crop": crop,
          "net variant": variant.name,
          "fit schedule": (f"{variant.describe(options)}, at most {config.num_epochs} epochs "
                           f"(patience {config.patience}), lr {config.learning_rate}, "
                           f"seed {config.seed}"),
          "outlines": f"{len(settings)} per image (d, sigma, vertices, seed: "
                      f"{sorted({s.d for s in settings})}, {sorted({s.sigma for s in settings})}, "
                      f"{sorted({s.vertices for s in settings})} (0 = all), "
                      f"{len({s.seed for s in settings})} seed(s))",
          "boundary F tolerance": f"{tolerance:g} px at 100x100 (x side/100 full)",
          "GrabCut": (f"{iterations} iterations; probable-background band {band:g} px at "
                      "100x100 (x side/100 full)"),
          "edge band": f"{edge_band:g} px at 100x100 (x side/100 full; edgeband_grabcut_full)",
          "device": jax.devices()[0].device_kind}
  results_path = os.path.join(out, "results.csv")
  images_path = os.path.join(out, "images.csv")
  tables.write_csv(results_path, [], reports.RESULT_FIELDS)
  tables.write_csv(images_path, [], reports.IMAGE_FIELDS)
  logging.info("evaluating %d image(s) x %d outline(s) x %d method(s) -> %s", len(images),
               len(settings), len(methods), out)
  skipped_settings = []
  progress = Progress(len(images))
  counts = {"ok": 0, "skipped": 0, "failed": 0}
  for i, (name, image_path, mask_path) in enumerate(images):
    info = {k: "" for k in reports.IMAGE_FIELDS}
    info["image"] = name
    try:
      rows, skipped = _evaluate_one(name, image_path, mask_path, config, crop, settings,
                                    methods, opts, info)
      skipped_settings += skipped
      tables.append_csv(results_path, rows, reports.RESULT_FIELDS)
      counts["ok"] += 1
    except _Skip as e:
      info.update(status="skipped", reason=str(e))
      counts["skipped"] += 1
      logging.warning("%s skipped: %s", name, e)
    except Exception as e:  # noqa: BLE001 (one image's failure must not stop the rest)
      info.update(status="failed", reason=f"{type(e).__name__}: {e}".replace("\n", " "))
      counts["failed"] += 1
      logging.error("%s failed: %s\n%s", name, info["reason"], traceback.format_exc())
    tables.append_csv(images_path, [info], reports.IMAGE_FIELDS)
    progress.update(i + 1)
    logging.info("progress: images %s (%d ok, %d skipped, %d failed)", progress, counts["ok"],
                 counts["skipped"], counts["failed"])
  meta["wall time"] = hms(time.perf_counter() - progress.t0)
  reports.write_reports(out, methods, skipped_settings, meta, config.size)
  return counts
