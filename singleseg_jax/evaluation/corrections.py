"""Corrections measured as the field measures interactive segmentation: simulated clicks
after a sloppy outline, and the number of clicks (NoC) to reach an IoU.

Per image (a `protocol.Case`) and simulated outline (`outlines.simulate_outline` at a
`protocol.Setting`), each method answers the outline; then, up to `cap` times, the
simulated person clicks where the answer is most wrong and the method answers again
with every click so far:

1. The error is (answer xor ground truth) at the crop's full resolution, the 128 band
   left out (the frame of the evaluation's full-size scores).
2. The click goes in the largest 8-connected error component, at its interior point
   farthest from its border (a Euclidean distance transform; the image border counts
   as border; ties to the one nearest their middle), the "centre" of the error as in
   Xu et al. 2016 and the RITM protocol. It
   is an *add* click where the answer missed object, *remove* where it took background.
3. A click is a tap of the page's stroke (`cutouts.STROKE_WIDTH` wide, a disc) in the
   100x100 frame, so every method gets exactly what the page would send.

Methods (`METHODS`), all at the crop's full resolution:
  grabcut           GrabCut from the outline with the tuned band (`baselines`), the
                    clicks as its sure labels: the baseline given the same corrections
  hybrid            the shipped snap + GrabCut hybrid with the clicks as sure labels
                    (`cutouts.corrected_full_resolution(..., hybrid=True)`: the page)
  snap              the snap net's answer with the clicks painted on it (the page
                    without OpenCV)
  snap_superpixels  the same, but a click first sets every superpixel it touches to
                    the click's label (the net's own units: a click claims the region
                    the net would have to move as a whole), the last click winning
The net is fitted once per image (`protocol.fit_net`) and reused for every click.

NoC@t is the number of clicks after which IoU first reaches t: 0 when the outline's
answer already does, and `cap` when it never does within the cap (as the field counts
it; `reached` says which).
"""
from __future__ import annotations

import json
import os
import time
import traceback
from typing import Callable, NamedTuple

import jax
import numpy as np
from absl import logging
from flax import nnx

from singleseg_jax import cutouts, figures, geometry, tables
from singleseg_jax import image as image_lib
from singleseg_jax import run, variants
from singleseg_jax.errors import InputError
from singleseg_jax.evaluation import baselines, dataset, protocol, reports
from singleseg_jax.evaluation import metrics as M
from singleseg_jax.progress import Progress, hms

METHODS = ("grabcut", "hybrid", "snap", "snap_superpixels")
NET_METHODS = frozenset({"hybrid", "snap", "snap_superpixels"})
CV2_METHODS = frozenset({"grabcut", "hybrid"})
#: The field's cap on clicks and its two thresholds.
CAP = 20
THRESHOLDS = (0.85, 0.90)
#: The click counts of the summary's IoU columns (noc.csv has every count).
TABLE_CLICKS = (0, 1, 2, 3, 4, 5, 10, 20)
#: A click that lowers IoU by more than this is counted in the summary: GrabCut, given
#: one more sure label, can re-fit its colour models and drop most of the object.
DROP = 0.1
TRACE_FIELDS = ("image", "d", "sigma", "vertices", "seed", "method", "clicks", "iou", "bf",
                "mode", "x", "y", "seconds")
NOC_FIELDS = ("image", "d", "sigma", "vertices", "seed", "method", "side", "fit_seconds",
              *(f"noc{round(100 * t)}" for t in THRESHOLDS),
              *(f"reached{round(100 * t)}" for t in THRESHOLDS),
              *(f"iou_{k}" for k in range(CAP + 1)))


class Click(NamedTuple):
  """One simulated correction: the pixel (row, col) at full resolution and its label."""
  row: int
  col: int
  mode: str  # "add" (missed object) or "remove" (background taken)

  def stroke(self, size: int, side: int) -> tuple[str, list]:
    """The click as the page's stroke: a tap at the pixel's centre in the size x size
    frame (`cutouts.stroke_masks` maps it back onto this pixel at side x side)."""
    return self.mode, [[(self.col + 0.5) * size / side, (self.row + 0.5) * size / side]]


def next_click(answer, labels: M.Labels) -> Click | None:
  """Where the simulated person clicks next (module doc, steps 1-2); None when the
  answer is right everywhere outside the band."""
  pred = geometry.as_bool_2d(answer, "answer")
  error = (pred ^ labels.object) & ~labels.ignore
  components, n = geometry.label_components(error)
  if n == 0:
    return None
  largest = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
  # Padded with background so the image border is border too.
  depth = geometry.distance_transform(~np.pad(largest, 1))[1:-1, 1:-1]
  # Ties (a strip is equally deep along its length) go to the deepest pixel nearest
  # the middle of the deepest ones, not to the first in raster order.
  deepest = np.argwhere(depth == depth.max())
  row, col = deepest[np.argmin(((deepest - deepest.mean(0)) ** 2).sum(1))]
  return Click(int(row), int(col), "remove" if pred[row, col] else "add")


class Trace(NamedTuple):
  """A method's scores after 0..cap clicks, and the clicks."""
  iou: list      # cap + 1 floats
  bf: list
  clicks: list   # Click per correction made (fewer than cap when the answer was perfect)
  seconds: list  # per answer


def simulate(answer: Callable, labels: M.Labels, size: int, tolerance: float,
             cap: int = CAP) -> Trace:
  """Runs the correction loop on one outline: `answer(strokes)` is the method's
  full-resolution bool mask given the strokes so far (size x size frame); `tolerance`
  is boundary F's, in full-resolution pixels. A perfect answer stops the loop and
  keeps its scores for the remaining counts."""
  side = labels.object.shape[0]
  strokes, clicks, ious, bfs, seconds = [], [], [], [], []

  def scored_answer():
    t0 = time.perf_counter()
    mask = answer(strokes)
    seconds.append(time.perf_counter() - t0)
    s = M.scores(mask, labels, tolerance)
    ious.append(s["iou"])
    bfs.append(s["bf"])
    return mask

  mask = scored_answer()
  for _ in range(cap):
    click = next_click(mask, labels)
    if click is None:
      break
    clicks.append(click)
    strokes.append(click.stroke(size, side))
    mask = scored_answer()
  pad = cap + 1 - len(ious)
  return Trace(ious + ious[-1:] * pad, bfs + bfs[-1:] * pad, clicks, seconds)


def noc(ious, threshold: float) -> tuple[int, bool]:
  """(clicks until IoU first reaches `threshold`, whether it did): the cap,
  len(ious) - 1, when it never does."""
  hit = [k for k, v in enumerate(ious) if v >= threshold]
  return (hit[0], True) if hit else (len(ious) - 1, False)


def superpixel_labels(net, image: np.ndarray) -> np.ndarray:
  """The (S, S) superpixel index of each pixel of `image`, as the snap net sees it."""
  from singleseg_jax.snap import net as snap_net  # noqa: PLC0415 (snap runs only)
  model = nnx.merge(net.graphdef, net.params)
  return np.asarray(snap_net.graph_of(image, model.num_segments).labels)


def with_superpixel_clicks(soft: np.ndarray, superpixels: np.ndarray, strokes) -> np.ndarray:
  """The net's (S, S) probability with every superpixel a stroke touches set to 1 (add)
  or 0 (remove), later strokes winning."""
  size = soft.shape[0]
  out = np.array(soft, np.float32)
  for stroke in strokes:
    add, remove = cutouts.stroke_masks([stroke], size, (size, size))
    hit = np.isin(superpixels, np.unique(superpixels[add | remove]))
    out[hit] = 1.0 if stroke[0] == "add" else 0.0
  return out


def answers(case: protocol.Case, outline: np.ndarray, soft, superpixels) -> dict:
  """{method: answer(strokes) -> full-resolution bool mask} for one outline at the run's
  size (`soft`: the net's probability for it at that size, None without a net)."""
  side = case.full.object.shape[0]
  size = outline.shape[0]
  box = (0, 0, side)  # case.crop is already the square
  outline_full = image_lib.resize_mask(outline, (side, side))  # as the hybrid sizes it up
  band = protocol.full_band(case, baselines.DEFAULT_BAND)

  def grabcut(strokes):
    add, remove = cutouts.stroke_masks(strokes, size, (side, side))
    mask = baselines.grabcut(case.crop, outline_full, band=band,
                             iterations=baselines.DEFAULT_ITERATIONS, sure_fg=add, sure_bg=remove)
    return (mask | add) & ~remove

  def net(hybrid, superpixel_clicks=False):
    def answer(strokes):
      p = with_superpixel_clicks(soft, superpixels, strokes) if superpixel_clicks else soft
      return cutouts.corrected_full_resolution(outline, p, case.crop, box, strokes, hybrid)
    return answer

  return {"grabcut": grabcut, "hybrid": net(True), "snap": net(False),
          "snap_superpixels": net(False, True)}


def check(methods, config, cap: int) -> list[str]:
  """The methods in order, each once; InputError for unknown ones, a net method with a
  config whose variant is not snap, a cap below 1, or GrabCut without OpenCV."""
  methods = list(dict.fromkeys(methods))
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    raise InputError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
  if not isinstance(cap, int) or cap < 1:
    raise InputError(f"--max_clicks must be a positive integer, got {cap!r}")
  variant = run.fit_options(config).variant_impl  # validates the schedule too
  if NET_METHODS & set(methods) and variant.name != variants.Snap.name:
    raise InputError(f"methods {sorted(NET_METHODS & set(methods))} need a snap config, "
                     f"not variant {variant.name!r} (use experiments/configs/evaluate_snap.py)")
  if CV2_METHODS & set(methods):
    baselines.require_cv2()
  return methods


def _evaluate_image(case, config, settings, methods, cap, tolerance):
  """(trace rows, noc rows, skipped settings) of one image."""
  size, side = case.small.object.shape[0], case.full.object.shape[0]
  net, fit_s = None, 0.0
  if NET_METHODS & set(methods):
    net, fit_s, epochs, reason, _ = protocol.fit_net(config, case.prep.image)
    logging.info("%s: fit %.1f s (%d epochs, %s)", case.name, fit_s, epochs, reason)
  runner = protocol.NetRunner(net, case.prep.image, config.seed)
  superpixels = superpixel_labels(net, case.prep.image) if "snap_superpixels" in methods \
      else None
  traces, nocs, skipped = [], [], []
  for s in settings:
    key = {"image": case.name, "d": s.d, "sigma": s.sigma, "vertices": s.vertices,
           "seed": s.seed}
    try:
      out = protocol.simulated_outline(case, s)
    except InputError as e:
      skipped.append(f"{case.name} {key}: {e}")
      continue
    soft = runner(out.mask)[1] if net is not None else None
    if net is not None and soft is None:  # the outline gave the net nothing
      soft = np.zeros(out.mask.shape, np.float32)
    methods_of = answers(case, out.mask, soft, superpixels)
    for method in methods:
      trace = simulate(methods_of[method], case.full, size,
                       image_lib.frame_length(tolerance, side), cap)
      for k in range(cap + 1):
        c = trace.clicks[k - 1] if 0 < k <= len(trace.clicks) else None
        x, y = (round(v, 2) for v in c.stroke(size, side)[1][0]) if c else ("", "")
        traces.append({**key, "method": method, "clicks": k, "iou": trace.iou[k],
                       "bf": trace.bf[k], "mode": c.mode if c else "", "x": x, "y": y,
                       "seconds": round(trace.seconds[k], 4) if k < len(trace.seconds) else ""})
      row = {**key, "method": method, "side": side, "fit_seconds": round(fit_s, 2),
             **{f"iou_{k}": v for k, v in enumerate(trace.iou)}}
      for t in THRESHOLDS:
        row[f"noc{round(100 * t)}"], row[f"reached{round(100 * t)}"] = noc(trace.iou, t)
      nocs.append(row)
      logging.info("%s d=%g sigma=%g %s: IoU %.3f -> %.3f after %d clicks; NoC@85 %d, "
                   "NoC@90 %d", case.name, s.d, s.sigma, method, trace.iou[0], trace.iou[-1],
                   cap, row["noc85"], row["noc90"])
  return traces, nocs, skipped


def evaluate_corrections(config, data_dir: str, out: str, *, settings, methods,
                         crop: str = "center", max_images: int = 0, cap: int = CAP,
                         tolerance: float = protocol.BF_TOLERANCE, command: str = "") -> dict:
  """Runs the click simulation (module doc) on every image of `data_dir` and writes
  clicks.csv (a row per image x outline x method x click count), noc.csv (a row per
  image x outline x method), run.json (the flags), summary.md and noc_curve.png to
  `out`. Rows are appended per image; rerun the same command (any `max_images`) and
  it goes on with the images not done. Checks every argument before anything is
  written; returns the counts of images done and not."""
  methods = check(methods, config, cap)
  image_lib.crop_square(np.zeros((image_lib.MIN_SIDE,) * 2 + (3,), np.uint8), crop)
  if tolerance < 0:
    raise InputError("--bf_tolerance must be >= 0")
  images = dataset.find_images(data_dir)[:max_images or None]
  finished = _start_or_resume(out, {
      "config": json.loads(config.to_json_best_effort()), "data": os.path.abspath(data_dir),
      "settings": [list(s) for s in settings], "methods": methods, "cap": cap, "crop": crop,
      "tolerance": tolerance})
  paths = {name: os.path.join(out, name) for name in ("clicks.csv", "noc.csv")}
  logging.info("corrections: %d image(s) (%d done before) x %d outline(s) x %s, up to %d "
               "clicks -> %s", len(images), len(finished), len(settings), ",".join(methods),
               cap, out)
  progress = Progress(len(images), start=sum(name in finished for name, _, _ in images))
  done, notes = progress.start, []
  for i, (name, image_path, mask_path) in enumerate(images):
    if name in finished:
      continue
    try:
      if mask_path is None:
        raise InputError(f"no mask masks/{name}.png")
      case = protocol.load_case(name, image_path, mask_path, config, crop)
      if case.full.object.mean() < protocol.MIN_OBJECT_FRACTION:
        raise InputError(f"the {crop} crop keeps under 1% object")
      traces, nocs, skipped = _evaluate_image(case, config, settings, methods, cap, tolerance)
      tables.append_csv(paths["clicks.csv"], traces, TRACE_FIELDS)
      tables.append_csv(paths["noc.csv"], nocs, NOC_FIELDS)  # last: marks the image done
      notes += skipped
      done += 1
    except InputError as e:
      notes.append(f"{name} skipped: {e}")
      logging.warning("%s skipped: %s", name, e)
    except Exception as e:  # noqa: BLE001 (one image's failure must not stop the rest)
      notes.append(f"{name} failed: {type(e).__name__}: {e}")
      logging.error("%s failed: %s\n%s", name, e, traceback.format_exc())
    progress.update(i + 1)
    logging.info("progress: images %s", progress)
  rows = tables.read_csv(paths["noc.csv"])
  meta = {"command": command, "data": os.path.abspath(data_dir), "crop": crop,
          "outlines": ", ".join(f"d={s.d:g} sigma={s.sigma:g} vertices={s.vertices} "
                                f"seed={s.seed}" for s in settings),
          "clicks": f"up to {cap}; a tap {cutouts.STROKE_WIDTH:g} px wide at 100x100",
          "GrabCut": f"band {baselines.DEFAULT_BAND:g} px at 100x100, "
                     f"{baselines.DEFAULT_ITERATIONS} iterations",
          "wall time (this invocation)": hms(time.perf_counter() - progress.t0),
          "device": jax.devices()[0].device_kind}
  tables.atomic_write(os.path.join(out, "summary.md"),
                      summary_markdown(rows, methods, cap, meta, notes))
  if rows:
    figures.noc_curve(curve_series(rows, methods, cap), THRESHOLDS,
                      os.path.join(out, "noc_curve.png"))
  return {"ok": done, "not": len(images) - done}


def _start_or_resume(out: str, identity: dict) -> set:
  """The images `out` already holds (a killed or shorter run with the same flags,
  `--max_images` aside), after dropping the clicks of an image it did not finish; or a
  fresh start. InputError for a run made with other flags."""
  identity = json.loads(json.dumps(identity))
  paths = [os.path.join(out, n) for n in ("run.json", "clicks.csv", "noc.csv")]
  if all(os.path.exists(p) for p in paths):
    with open(paths[0]) as f:
      old = json.load(f)
    # The config as run.py compares it (keys added since count as their defaults).
    if {k: v for k, v in old.items() if k != "config"} != \
        {k: v for k, v in identity.items() if k != "config"} or \
        run.config_differences(old.get("config", {}), identity["config"]):
      raise InputError(f"{out} holds a corrections run made with other flags or config; "
                       "use another --out")
    finished = {r["image"] for r in tables.read_csv(paths[2])}
    clicks = [r for r in tables.read_csv(paths[1]) if r["image"] in finished]
    tables.write_csv(paths[1], clicks, TRACE_FIELDS)
    return finished
  if os.path.exists(out) and not os.path.isdir(out):
    raise InputError(f"--out {out} is a file, not a folder")
  os.makedirs(out, exist_ok=True)
  tables.write_csv(paths[1], [], TRACE_FIELDS)
  tables.write_csv(paths[2], [], NOC_FIELDS)
  tables.atomic_write(paths[0], json.dumps(identity, indent=1))
  return set()


def curve_series(rows, methods, cap: int) -> dict:
  """{method: (mean IoU, 95% half-width) per click count 0..cap} over per-image means."""
  return {m: np.array([reports.ci(rows, f"iou_{k}", lambda r, m=m: r["method"] == m)[:2]
                       for k in range(cap + 1)]) for m in methods}


def _worst_drop(row, cap: int) -> float:
  """The largest fall in IoU that one click caused on one outline (a noc.csv row)."""
  ious = [float(row[f"iou_{k}"]) for k in range(cap + 1)]
  return max(0.0, *(a - b for a, b in zip(ious, ious[1:])))


def summary_markdown(rows, methods, cap: int, meta: dict, notes) -> str:
  """summary.md: NoC and IoU after k clicks per method, and paired differences."""
  lines = ["# Corrections: clicks to reach an IoU", ""]
  lines += [f"- {k}: {v}" for k, v in meta.items()]
  lines += [f"- images: {len({r['image'] for r in rows})}; rows: {len(rows)}", ""]
  lines += ["Every ± is a 95% Student-t interval over per-image means (the outlines of one "
            f"image are averaged first). NoC@t: clicks until IoU >= t, 0 if the outline's "
            f"answer reaches it, {cap} (the cap) if it never does; *missed 90* counts the "
            "outlines that never reach 90%, the next column those where one click lowered "
            "IoU by more than that. IoU at the crop's full resolution, the 128 band "
            "ignored.", ""]
  ks = [k for k in TABLE_CLICKS if k <= cap]
  of = lambda m: (lambda r: r["method"] == m)
  table = []
  for m in methods:
    sel = [r for r in rows if of(m)(r)]
    missed = sum(r["reached90"] != "True" for r in sel)
    dropped = sum(_worst_drop(r, cap) > DROP for r in sel)
    table.append([m, tables.fmt(*reports.ci(rows, "noc85", of(m))[:2], 2),
                  tables.fmt(*reports.ci(rows, "noc90", of(m))[:2], 2),
                  f"{missed} of {len(sel)}", f"{dropped} of {len(sel)}"]
                 + [tables.fmt(*reports.ci(rows, f"iou_{k}", of(m))[:2]) for k in ks])
  lines += tables.markdown_table(["method", "NoC@85", "NoC@90", "missed 90",
                                  f"a click cost > {DROP:g} IoU"]
                                 + [f"IoU@{k}" for k in ks], table)
  lines.append("")
  ref = "grabcut"
  if ref in methods and len(methods) > 1:
    base = [r for r in rows if of(ref)(r)]
    table = [[f"{m} − {ref}"] + [tables.fmt(*reports.paired([r for r in rows if of(m)(r)],
                                                            base, key), 2 if "noc" in key else 3)
                                 for key in ("noc85", "noc90", *(f"iou_{k}" for k in ks))]
             for m in methods if m != ref]
    lines += ["## Paired differences: method minus GrabCut with the same clicks", "",
              "Per image, the mean over the same outlines of (method − grabcut): fewer "
              "clicks (negative NoC) and higher IoU (positive) are better.", ""]
    lines += tables.markdown_table(["", "Δ NoC@85", "Δ NoC@90"] + [f"Δ IoU@{k}" for k in ks],
                                   table)
    lines.append("")
  images = sorted({r["image"] for r in rows})
  if images:
    lines += ["## Per image: NoC@90 (mean over outlines)", ""]
    per = {m: reports.per_image_means(rows, "noc90", of(m)) for m in methods}
    lines += tables.markdown_table(["image"] + methods, [
        [im] + [f"{per[m].get(im, float('nan')):.1f}" for m in methods] for im in images])
    lines.append("")
  if notes:
    lines += ["## Skipped", ""] + [f"- {n}" for n in notes] + [""]
  return "\n".join(lines)
