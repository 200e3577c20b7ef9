"""The width ablation: nets of several widths fitted to one image (several seeds each,
optionally scored on simulated sloppy outlines), and the same question across images.

The paper widened its net for the car (in_channels 512, every hidden width doubled);
here the width multiplier scales in_channels with it: in_channels = round(256 * width).
The seeds of one width train one after another (`fit`) or together (`fit_seeds`: a
population spread over all devices and vmapped within each); both give the same nets.

Across images, `load_runs` reads one ablation output per image, made with the same
widths and seeds, and `summary_markdown` answers per width and per pair of
neighbouring widths, paired image by image: does a wider net fit validation better,
and does it segment the user's outline better?
"""
from __future__ import annotations

import glob
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec

from singleseg_jax import figures, run, tables
from singleseg_jax.errors import InputError
from singleseg_jax.evaluation import dataset, protocol
from singleseg_jax.fit import (fit, fit_seeds, global_array, init_state,
                               population_functions, population_inputs, population_mesh)
from singleseg_jax.paper.model import count_params
from singleseg_jax.progress import Progress
from singleseg_jax.tables import fmt, markdown_table, mean_ci, read_csv
from singleseg_jax.train import epoch_update

BASE_IN_CHANNELS = 256
#: Columns of the across-images summary.csv (one row per image x width).
SUMMARY_FIELDS = ("image", "width", "in_channels", "params", "seeds", "epochs", "best_val_mse",
                  "iou_full")
TOGETHER = ("auto", "vmap", "loop")


def outline_settings(d_values, sigmas, vertices: int) -> list[protocol.Setting]:
  """The outlines each net is scored on: every (d, sigma), `vertices` vertices, seed 0."""
  if vertices < 3:
    raise InputError("--eval_vertices must be >= 3")
  return dataset.outline_settings(d_values, sigmas, [vertices], 1)


def seeds_together(together: str) -> bool:
  """Whether the seeds of a width train together (a population): 'auto' does so off
  the CPU, where XLA:CPU runs the vmapped (grouped) convolutions slower than a loop,
  and always with several processes."""
  if together not in TOGETHER:
    raise InputError(f"together must be one of {TOGETHER}, got {together!r}")
  if jax.process_count() > 1:  # a loop would fit every seed on every process
    if together == "loop":
      raise InputError("--together=loop runs on one process only: with several, the seeds "
                       "train as one population (vmap)")
    return True
  if together == "auto":
    return jax.default_backend() != "cpu"
  return together == "vmap"


def width_config(config, width: float):
  """The config at width multiplier `width`, in_channels scaled with it."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.width = width
    config.in_channels = max(1, int(round(BASE_IN_CHANNELS * width)))
  return config


def run_width(config, image, width: float, seeds: int, together: bool):
  """Fits `seeds` nets at `width`; returns (rows, options, keys, seconds, states)."""
  config = width_config(config, width)
  options = run.fit_options(config)
  keys = [jax.random.key(config.seed + s) for s in range(seeds)]
  t0 = time.perf_counter()
  progress = Progress(seeds * options.num_epochs)

  def log(i, state, record):  # every 10th epoch: rate and ETA over all seeds
    progress.update(progress.done + 1)
    if record["epoch"] % 10 == 0 or record["epoch"] == 1:
      logging.info("  width %g seed %d: epoch %d/%d, val mse %.5f; seed-epochs %s (at most)",
                   width, i, record["epoch"], options.num_epochs, record["val_mse"], progress)

  if together:
    states, reasons = fit_seeds(keys, image, options, on_epoch=log)
  else:
    states, reasons = zip(*[fit(k, image, options, on_epoch=lambda rec, i=i: log(i, None, rec))
                            for i, k in enumerate(keys)])
  seconds = time.perf_counter() - t0
  params = count_params(states[0].train.model())
  rows = [{"width": width, "in_channels": config.in_channels, "params": params, "seed": s,
           "epochs": st.epoch, "best_val_loss": st.plateau.best,
           "best_val_mse": st.plateau.best / (0.5 * image.size),
           "stopped": reason, "seconds_per_run": seconds / seeds,
           "seeds_trained": "vmap" if together else "loop"}
          for s, (st, reason) in enumerate(zip(states, reasons))]
  return rows, options, keys, seconds, states


SCORES = ("iou_full", "bf_full", "outlines")


def score_outlines(case, states, seed: int, settings, variant: str) -> list[dict]:
  """Sloppy-outline IoU and boundary F of each net on `case` (one dict per net, SCORES).

  With several processes each scores its share of the nets (every process holds all
  final states) and the scores are gathered, so every process returns all of them."""
  opts = protocol.options(variant)
  procs, me = jax.process_count(), jax.process_index()
  scores = np.zeros((len(states), len(SCORES)))
  for i in range(me, len(states), procs):
    sc = protocol.mean_net_iou(case, protocol.NetRunner(states[i].train, case.prep.image, seed),
                               settings, opts)
    scores[i] = [sc[k] for k in SCORES]
  if procs > 1:  # each net's row was filled by one process, the others left zeros
    scores = multihost_utils.process_allgather(scores).sum(axis=0)
  return [{"iou_full": float(r[0]), "bf_full": float(r[1]), "outlines": int(r[2])}
          for r in scores]


def epoch_seconds(keys, image, options, repeats: int = 3) -> dict:
  """Steady-state seconds per epoch for all seeds: one population epoch (sharded and
  vmapped, as `fit_seeds` trains) vs a Python loop of single-net epochs."""
  mesh = population_mesh()
  fns = population_functions(options, mesh)
  kd, im = population_inputs(keys, image, mesh)
  ts, train, val, rule = fns.init(kd, im)
  pop = [ts, rule]
  start, one_epoch = (global_array(mesh, PartitionSpec(), np.int32(n)) for n in (0, 1))
  states = [init_state(k, options) for k in keys]
  data = [options.variant_impl.fixed_data(k, image, options)[0] for k in keys]
  microbatch = options.resolved_microbatch()
  one = jax.jit(lambda st, d, k: epoch_update(st, d, k, batch_size=options.batch_size,
                                              image=jnp.asarray(image, jnp.float32),
                                              microbatch=microbatch))

  def time_vmap():  # the states are donated: carry the new ones on
    pop[0], pop[1], metrics = fns.block(pop[0], train, val, kd, im, pop[1], start, one_epoch)
    return jax.block_until_ready(metrics)

  def time_loop():
    return jax.block_until_ready([one(s, d, k) for s, d, k in zip(states, data, keys)])

  out = {}
  for name, fn in (("vmap_s_per_epoch", time_vmap), ("loop_s_per_epoch", time_loop)):
    fn()  # compile
    t0 = time.perf_counter()
    for _ in range(repeats):
      fn()
    out[name] = (time.perf_counter() - t0) / repeats
  return out


def width_markdown(rows: list[dict], widths, case_note: str = "", timing: dict = None) -> list[str]:
  """The lines of ablation.md: one row per width (means ± sd over seeds)."""
  with_iou = "iou_full" in rows[0]
  table = []
  for w in widths:
    rs = [r for r in rows if r["width"] == w]
    mse = np.array([r["best_val_mse"] for r in rs])
    cells = [f"{w:g}", rs[0]["in_channels"], f"{rs[0]['params']:,}", len(rs),
             f"{np.mean([r['epochs'] for r in rs]):.0f}", f"{mse.mean():.5f} ± {mse.std():.5f}"]
    if with_iou:
      iou = np.array([r["iou_full"] for r in rs])
      cells.append(f"{iou.mean():.3f} ± {iou.std():.3f}")
    table.append(cells + [f"{rs[0]['seconds_per_run']:.1f}"])
  lines = markdown_table(["width", "in_channels", "params", "seeds", "epochs (mean)",
                          "best val MSE (mean ± sd)"]
                         + (["sloppy-outline IoU (mean ± sd)"] if with_iou else [])
                         + ["s per run"], table)
  if case_note:
    lines += ["", case_note]
  if timing:
    lines += ["", f"One epoch of all {timing['seeds']} seeds at width {timing['width']:g}, after "
              f"compilation: vmapped {timing['vmap_s_per_epoch']:.2f} s, Python loop "
              f"{timing['loop_s_per_epoch']:.2f} s (speed-up "
              f"x{timing['loop_s_per_epoch'] / timing['vmap_s_per_epoch']:.2f})."]
  return lines


def ablate(config, out: str, *, widths, seeds: int, together: str = "auto",
           mask: str | None = None, settings=None, compare_loop: bool = False) -> list[str]:
  """The width ablation of the config's image, written to `out`: ablation.csv (one row per
  width x seed), ablation.md (means per width), ablation.json (config, timing, process
  and device counts) and ablation.png (best val MSE, and IoU with `mask`, against
  parameters). With `mask` (the image's ground truth) every net is scored on the
  outlines of `settings`; with `compare_loop` the first width is also timed as one
  vmapped epoch against a loop. Under several processes every one makes this call and
  process 0 writes. Returns the lines of ablation.md."""
  try:
    widths = [float(w) for w in widths]
  except ValueError:
    raise InputError("widths must be numbers") from None
  if not widths or any(w <= 0 for w in widths) or seeds < 1:
    raise InputError("widths must be > 0 and --seeds >= 1")
  together = seeds_together(together)
  run.fit_options(config)
  _, prep = run.prepare(config)
  case = None
  if mask:
    case = protocol.load_case("image", config.image, mask, config, config.crop)
    if case.full.object.mean() < protocol.MIN_OBJECT_FRACTION:
      raise InputError(f"--mask: the {config.crop} crop keeps under 1% object")
  if jax.process_index() == 0:
    os.makedirs(out, exist_ok=True)
  rows, timing = [], {}
  progress = Progress(len(widths))
  for i, w in enumerate(widths):
    got, options, keys, seconds, states = run_width(config, prep.image, w, seeds, together)
    if case is not None:
      for row, sc in zip(got, score_outlines(case, states, config.seed, settings,
                                             options.variant)):
        row.update(sc)
    rows += got
    progress.update(i + 1)
    logging.info("width %g: %d params, best val mse %s, %s%.1f s for %d seeds; widths %s", w,
                 got[0]["params"], [round(r["best_val_mse"], 5) for r in got],
                 f"outline IoU {[round(r['iou_full'], 3) for r in got]}, " if case else "",
                 seconds, seeds, progress)
    if compare_loop and i == 0:
      timing = {"width": w, "seeds": seeds, **epoch_seconds(keys, prep.image, options)}
      logging.info("vmap vs loop: %s", timing)
  note = ""
  if case is not None:
    ds = sorted({s.d for s in settings})
    sigmas = sorted({s.sigma for s in settings})
    note = (f"IoU: the final net of each seed on {rows[0]['outlines']} simulated outlines "
            f"(d in {ds} px, sigma in {sigmas} px, {settings[0].vertices} vertices), full "
            "resolution, band ignored.")
  lines = width_markdown(rows, widths, note, timing)
  if jax.process_index() != 0:  # every process holds every row: one writes them
    return lines
  tables.write_csv(os.path.join(out, "ablation.csv"), rows)
  tables.atomic_write(os.path.join(out, "ablation.md"), "\n".join(lines) + "\n")
  tables.atomic_write(os.path.join(out, "ablation.json"), json.dumps(
      {"config": json.loads(config.to_json_best_effort()), "timing": timing,
       "processes": jax.process_count(), "devices": jax.device_count()}))
  figures.scatter_by_group(rows, "params", ["best_val_mse"] + (["iou_full"] if case else []),
                           "width", os.path.join(out, "ablation.png"), logx=True)
  return lines


def summarise(runs: list[str], out: str) -> list[str]:
  """The across-images summary of ablation outputs `runs` (directories or quoted
  patterns), written to `out`: summary.csv, summary.md, summary.png. Returns the
  lines of summary.md."""
  rows = load_runs(expand(runs))
  os.makedirs(out, exist_ok=True)
  tables.write_csv(os.path.join(out, "summary.csv"), rows, SUMMARY_FIELDS)
  lines = summary_markdown(rows)
  tables.atomic_write(os.path.join(out, "summary.md"), "\n".join(lines) + "\n")
  keys = ["best_val_mse"] + (["iou_full"] if has_iou(rows) else [])
  figures.lines_by_group(rows, "params", keys, "image", os.path.join(out, "summary.png"),
                         logx=True, logy=("best_val_mse",))
  return lines


def expand(patterns: list[str]) -> list[str]:
  """Directories named or matched by the patterns, in order, each once."""
  runs = []
  for p in patterns:
    if any(c in p for c in "*?["):
      hits = [h for h in sorted(glob.glob(p)) if os.path.isdir(h)]
    elif os.path.isdir(p):
      hits = [p]
    else:
      raise InputError(f"--runs: {p} is not a directory")
    runs += [h for h in hits if h not in runs]
  if not runs:
    raise InputError(f"--runs matched no directory: {','.join(patterns)}")
  return runs


def _image_name(out_dir: str) -> str:
  try:
    with open(os.path.join(out_dir, "ablation.json")) as f:
      image = json.load(f)["config"]["image"]
    return os.path.splitext(os.path.basename(image))[0]
  except (OSError, KeyError, ValueError):
    return os.path.basename(os.path.normpath(out_dir))


def load_runs(runs: list[str]) -> list[dict]:
  """One row per image x width: the image's mean over its seeds."""
  rows, layout = [], None
  for out_dir in runs:
    try:
      raw = read_csv(os.path.join(out_dir, "ablation.csv"))
    except OSError as e:
      raise InputError(f"{out_dir} is not an ablate_width output ({e.strerror}: {e.filename})") \
          from None
    if not raw:
      raise InputError(f"{out_dir}/ablation.csv has no rows")
    this = sorted({(float(r["width"]), int(r["seed"])) for r in raw})
    if layout is None:
      layout = this
    elif this != layout:
      raise InputError(f"{out_dir} has other widths or seeds than {runs[0]}: summarise runs "
                          "made with the same --widths and --seeds")
    name = _image_name(out_dir)
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
    raise InputError("two runs are of the same image: give each image once")
  return rows


def has_iou(rows: list[dict]) -> bool:
  """Whether every row has a sloppy-outline IoU (the runs were made with --mask)."""
  return all(np.isfinite(r["iou_full"]) for r in rows)


def _by_image(rows: list[dict], width: float, key: str) -> dict:
  return {r["image"]: r[key] for r in rows if r["width"] == width}


def per_width(rows: list[dict]) -> list[dict]:
  """Per width: means over images with 95% intervals of val MSE and IoU."""
  out = []
  for w in sorted({r["width"] for r in rows}):
    rs = [r for r in rows if r["width"] == w]
    out.append({"width": w, "in_channels": rs[0]["in_channels"], "params": rs[0]["params"],
                "images": len(rs), "seeds": rs[0]["seeds"],
                "mse": mean_ci([r["best_val_mse"] for r in rs]),
                "iou": mean_ci([r["iou_full"] for r in rs])})
  return out


def paired(rows: list[dict], narrow: float, wide: float) -> dict:
  """Per-image differences wide - narrow: val MSE relative (%), IoU absolute."""
  m0, m1 = _by_image(rows, narrow, "best_val_mse"), _by_image(rows, wide, "best_val_mse")
  i0, i1 = _by_image(rows, narrow, "iou_full"), _by_image(rows, wide, "iou_full")
  images = sorted(m0)
  dmse = [100.0 * (m1[k] - m0[k]) / m0[k] for k in images]
  diou = [i1[k] - i0[k] for k in images]
  return {"narrow": narrow, "wide": wide, "images": len(images),
          "dmse_pct": mean_ci(dmse), "mse_better": sum(d < 0 for d in dmse),
          "diou": mean_ci(diou), "iou_better": sum(d > 0 for d in diou)}


def summary_markdown(rows: list[dict]) -> list[str]:
  """The lines of summary.md: per width, then per pair of neighbouring widths."""
  widths = per_width(rows)
  with_iou = has_iou(rows)
  lines = [f"Over {widths[0]['images']} images, {widths[0]['seeds']} seed(s) each; "
           "± is a 95% t interval over images.", ""]
  lines += markdown_table(
      ["width", "in_channels", "params", "best val MSE"] + (["sloppy-outline IoU"] if with_iou
                                                            else []),
      [[f"{w['width']:g}", w["in_channels"], f"{w['params']:,}", fmt(*w["mse"], digits=5)]
       + ([fmt(*w["iou"])] if with_iou else []) for w in widths])
  ws = [w["width"] for w in widths]
  table = []
  for a, b in zip(ws, ws[1:]):
    p = paired(rows, a, b)
    table.append([f"{b:g} vs {a:g}", f"{fmt(*p['dmse_pct'], digits=1)} %",
                  f"{p['mse_better']} of {p['images']}"]
                 + ([fmt(*p["diou"]), f"{p['iou_better']} of {p['images']}"] if with_iou else []))
  lines += [""] + markdown_table(
      ["wider vs narrower", "val MSE change", "images with lower val MSE"]
      + (["IoU change", "images with higher IoU"] if with_iou else []), table)
  return lines
