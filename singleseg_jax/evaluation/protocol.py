"""The sloppy-outline protocol per image: what the evaluation runs on every image, and
what the width ablation reuses to score each fitted net.

An image and its ground-truth mask become a `Case` (square crop, 100x100 and full
resolution labels); `evaluate_image` simulates outlines from the ground truth for each
`Setting` and scores each method's answer (IoU and boundary F, the 128 band ignored).
Lengths (outline offsets and jitter, the boundary-F tolerance, GrabCut's band) are
pixels of the 100x100 frame (`image.FRAME`), scaled by side / 100 on the run's
`config.size` image and at full resolution, so a setting means the same at any size.
`evaluation.dataset` documents the protocol in full.
"""
from __future__ import annotations

import math
import time
import zlib
from typing import NamedTuple

import jax
import numpy as np
from absl import logging

from singleseg_jax import image as image_lib
from singleseg_jax import run
from singleseg_jax.errors import InputError
from singleseg_jax.evaluation import baselines as B
from singleseg_jax.evaluation import metrics as M
from singleseg_jax.evaluation import outlines as O
from singleseg_jax.fit import fit
from singleseg_jax.progress import Progress
from singleseg_jax.segment import segment
from singleseg_jax.snap.net import graph_of

METHODS = ("net", "outline", "outline_superpixels", "thumbnail_nearest", "thumbnail_bicubic",
           "grabcut_100", "grabcut_full", "grabcut_trimap_full", "net_grabcut_full",
           "union_grabcut_full", "edgeband_grabcut_full", "grabcut_grown_full")
HYBRID_METHODS = ("net_grabcut_full", "union_grabcut_full", "edgeband_grabcut_full")
CV2_METHODS = frozenset({"grabcut_100", "grabcut_full", "grabcut_trimap_full",
                         "grabcut_grown_full", *HYBRID_METHODS})
MIN_OBJECT_FRACTION = 0.01
#: Boundary F tolerance in pixels at 100x100 (the evaluation's flag defaults to it).
BF_TOLERANCE = 2.0


def options(variant: str, *, tolerance: float = BF_TOLERANCE,
            iterations: int = B.DEFAULT_ITERATIONS, band: float = B.DEFAULT_BAND,
            edge_band: float = B.DEFAULT_EDGE_BAND, segments: int = 100) -> dict:
  """The options `evaluate_image` and `mean_net_iou` read (lengths at 100x100;
  `segments`: superpixels of `outline_superpixels`, the snap config's)."""
  return {"tolerance": tolerance, "iterations": iterations, "band": band,
          "edge_band": edge_band, "segments": segments, "variant": variant}


class Setting(NamedTuple):
  """One simulated outline: offset d, vertex jitter sigma (pixels at 100x100), vertices
  kept (0: all) and the seed of its randomness."""
  d: float
  sigma: float
  vertices: int
  seed: int


class Case(NamedTuple):
  """One image of the evaluation with its ground truth at both scales."""
  name: str
  prep: image_lib.PreparedImage
  crop: np.ndarray          # (side, side, 3) uint8: the square of the original
  full: M.Labels            # ground truth on the crop at full resolution
  small: M.Labels           # ground truth at the run's size (the seed's 100x100)
  sim_object: np.ndarray    # the object at that size the outlines are made from
  hw: tuple


def load_case(name, image_path, mask_path, config, crop) -> Case:
  """The `Case` of one image and its 8-bit ground truth; InputError if they do not fit."""
  original = image_lib.load_image(image_path)
  gt = image_lib.load_mask(mask_path)
  if gt.shape != original.shape[:2]:
    raise InputError(f"mask is {gt.shape[1]}x{gt.shape[0]} but the image is "
                        f"{original.shape[1]}x{original.shape[0]}")
  prep = image_lib.prepare_image(original, config.size, config.scale, crop)
  full = M.split_labels(image_lib.crop_to_box(gt, prep.crop_box))
  small = M.downsample_labels(full, config.size)
  return Case(name, prep, image_lib.crop_to_box(original, prep.crop_box), full, small,
              M.resolve_band(small), original.shape[:2])


class Fitted(NamedTuple):
  """One image's fit: the best-val-loss net, seconds, epochs, why it stopped, and the
  val MSE (per pixel and channel) at the best val loss; NaN for a variant that logs no
  `mse` metric (snap)."""
  net: object
  seconds: float
  epochs: int
  reason: str
  val_mse: float


def fit_net(config, image) -> Fitted:
  """Fits the config's net to one image (its own config.size)."""
  options = run.fit_options(config)
  best = [None]
  # The val MSE at the best val loss: the loss (half the summed squared error of a
  # pair) grows with the image's pixels, the MSE per pixel compares across sizes.
  best_val = [math.inf, math.nan]
  t0 = time.perf_counter()
  progress = Progress(options.num_epochs)

  def on_epoch(record):
    progress.update(record["epoch"])
    if record["val_loss"] < best_val[0]:
      best_val[:] = [record["val_loss"], record.get("val_mse", math.nan)]
    if record["epoch"] % 20 == 0:
      logging.info("  fit epoch %s (at most), val loss %.4g", progress, record["val_loss"])

  def on_sync(state, new_best):
    if new_best is not None or best[0] is None:
      keep = (new_best or state).train
      best[0] = _Net(keep.graphdef, keep.params)

  state, reason = fit(jax.random.key(config.seed), image, options, on_epoch=on_epoch,
                      on_sync=on_sync)
  return Fitted(best[0], time.perf_counter() - t0, state.epoch, reason, best_val[1])


class _Net(NamedTuple):
  """What `segment` needs of a fitted net."""
  graphdef: object
  params: object


def outline_rng(name: str, s: Setting) -> np.random.Generator:
  """A generator fixed by the image name and the setting (stable across runs)."""
  return np.random.default_rng(zlib.crc32(f"{name}|{s.d!r}|{s.sigma!r}|{s.vertices}|{s.seed}"
                                          .encode()))


class NetRunner:
  """`segment` with a compiled first call, so per-outline times exclude compilation."""

  def __init__(self, state, image, seed: int):
    self.state, self.image, self.seed = state, image, seed
    self.warm = False

  def __call__(self, outline: np.ndarray):
    if not self.warm:
      try:
        segment(self.state, self.image, outline, jax.random.key(self.seed))
      except InputError:
        pass
      self.warm = True
    t0 = time.perf_counter()
    soft = None
    try:
      res = segment(self.state, self.image, outline, jax.random.key(self.seed))
      mask, soft, note = res.mask, res.probability, ""
    except InputError:  # the outline covers no thumbnail pixel: the net gets nothing
      mask, note = np.zeros_like(outline), "outline covers no thumbnail pixel: empty mask"
    return np.asarray(mask, bool), soft, time.perf_counter() - t0, note


def full_band(case: Case, band: float) -> float:
  """A band of `band` pixels at 100x100 in pixels of the case's full-resolution crop."""
  return image_lib.frame_length(band, case.full.object.shape[0])


def run_method(method, case: Case, outline, outline_full, net, opts):
  """(mask at 100x100 or None, mask at full size or None, seconds, note)."""
  t0 = time.perf_counter()
  note = ""
  if method == "net":
    mask, soft, seconds, note = net(outline)
    side = case.full.object.shape[0]
    full = None if soft is None else image_lib.resize_mask(soft, (side, side))
    return mask, full, seconds, note
  if method == "outline":
    return B.outline_answer(outline), B.outline_answer(outline_full), 0.0, ""
  scale = case.prep.thumbnail.shape[0] / case.prep.image.shape[0]  # the net's own
  if method == "thumbnail_nearest":
    mask = B.thumbnail_roundtrip(outline, scale, upsample="nearest")
  elif method == "thumbnail_bicubic":
    mask = B.thumbnail_roundtrip(outline, scale, upsample="bicubic")
  elif method == "grabcut_100":
    mask = B.grabcut(case.prep.image, outline, iterations=opts["iterations"])
    if B.grabcut_degenerate(B.grabcut_init(outline)):
      note = "grabcut cannot run: answered the outline"
  elif method in ("grabcut_full", "grabcut_trimap_full"):
    band = full_band(case, opts["band"]) if method == "grabcut_trimap_full" else 0
    full = B.grabcut(case.crop, outline_full, band=band, iterations=opts["iterations"])
    seconds = time.perf_counter() - t0
    if B.grabcut_degenerate(B.grabcut_init(outline_full, band)):
      note = "grabcut cannot run: answered the outline"
    return None, full, seconds, note
  elif method == "grabcut_grown_full":
    full = B.grabcut_grown(case.crop, outline_full, outline, case.prep.image,
                           band=full_band(case, opts["band"]), iterations=opts["iterations"])
    return None, full, time.perf_counter() - t0, note
  else:
    raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
  return mask, None, time.perf_counter() - t0, note


def simulated_outline(case: Case, s: Setting) -> O.Outline:
  """The sloppy outline of `case`'s object at setting `s` (lengths in pixels of the
  100x100 frame, scaled to the run's size); InputError where none can be made."""
  size = case.small.object.shape[0]
  return O.simulate_outline(case.sim_object, image_lib.frame_length(s.d, size),
                            image_lib.frame_length(s.sigma, size), s.vertices or None,
                            outline_rng(case.name, s))


def evaluate_image(case: Case, net, settings, methods, opts, fit_info) -> tuple[list, list]:
  """Rows for every outline and method of one image, and the settings skipped."""
  size = case.small.object.shape[0]
  side = case.full.object.shape[0]
  tol_small, tol_full = (image_lib.frame_length(opts["tolerance"], s) for s in (size, side))
  rows, skipped, superpixels = [], [], None
  for s in settings:
    try:
      out = simulated_outline(case, s)
    except InputError as e:
      skipped.append(f"{case.name} d={s.d:g} sigma={s.sigma:g} vertices={s.vertices} "
                     f"seed={s.seed}: {e}")
      continue
    outline_full = O.rasterise(out.polygons, side, side, scale=side / size)
    base = {"image": case.name, "d": s.d, "sigma": s.sigma, "vertices": s.vertices,
            "seed": s.seed, "side": side,
            "outline_iou": M.iou(out.mask, case.small.object, case.small.ignore),
            "outline_iou_full": M.iou(outline_full, case.full.object, case.full.ignore),
            **fit_info}
    net_answer = None
    band = full_band(case, opts["band"])
    for method in methods:
      if method in HYBRID_METHODS:
        net_full = net_answer[1] if net_answer[1] is not None else \
            image_lib.resize_mask(net_answer[0], (side, side))
        start = net_full | outline_full if method == "union_grabcut_full" else net_full
        t0 = time.perf_counter()
        if method == "net_grabcut_full":
          full = B.grabcut(case.crop, start, band=band, iterations=opts["iterations"])
        elif method == "union_grabcut_full":
          full = B.union_grabcut(case.crop, outline_full, net_full, band=band,
                                 iterations=opts["iterations"])
        else:
          full = B.edge_band_grabcut(case.crop, net_full, band=full_band(case, opts["edge_band"]),
                                     iterations=opts["iterations"])
        small, seconds = None, time.perf_counter() - t0 + net_answer[2]
        note = "grabcut cannot run: answered its start mask" \
            if B.grabcut_degenerate(B.grabcut_init(start, band)) else ""
      elif method == "outline_superpixels":
        if superpixels is None:  # snap's own (cached per image), made once, outside the
          # timer as snap's graph is outside its: the vote is what each outline costs
          superpixels = np.asarray(graph_of(case.prep.image, opts["segments"]).labels)
        t0 = time.perf_counter()
        small, full, note = B.superpixel_vote(superpixels, out.mask), None, ""
        seconds = time.perf_counter() - t0
      else:
        small, full, seconds, note = run_method(method, case, out.mask, outline_full, net, opts)
      if method == "net":
        net_answer = (small, full, seconds)
      if small is None:
        small = image_lib.resize_mask(full, (size, size))
      if full is None:
        full = image_lib.resize_mask(small, (side, side))
      a = M.scores(small, case.small, tol_small)
      b = M.scores(full, case.full, tol_full)
      rows.append({**base, "method": method, "variant": opts["variant"] if method == "net" else "",
                   **a, "iou_full": b["iou"], "bf_full": b["bf"],
                   "seconds": seconds, "note": note})
  return rows, skipped


def mean_net_iou(case: Case, net, settings, opts) -> dict:
  """Mean IoU and boundary F of the net alone over `settings` (100x100 and full size)."""
  rows, _ = evaluate_image(case, net, settings, ["net"], opts, {})
  if not rows:
    raise InputError(f"{case.name}: no outline could be simulated")
  return {k: float(np.mean([r[k] for r in rows])) for k in ("iou", "iou_full", "bf_full")} | \
      {"outlines": len(rows)}
