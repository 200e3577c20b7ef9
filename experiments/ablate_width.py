"""Width ablation: python -m experiments.ablate_width --config=... --out=DIR

Fits the config's image at each width multiplier (in_channels scaled with it, as the
paper did for the car: in_channels = round(256 * width)), several seeds per width.
The seeds of one width train together (`fit_seeds`: stacked params, vmapped epoch;
`--together`, by default a plain loop on CPU, where that is faster).
Writes DIR/ablation.csv (one row per width x seed), DIR/ablation.md (means per width)
and DIR/ablation.png (best val MSE, and IoU when measured, vs parameters). With
--compare_loop, the first width is also trained seed by seed in a Python loop to time
what vmap saves.

User input, not only validation: with --mask (the ground truth of the config's image,
255 object / 0 background / 128 ignored, the image's own size), every fitted net is
also scored on simulated sloppy outlines by the protocol of `experiments.evaluate`
(`experiments/outline_protocol.py`): outlines offset by --eval_d_values pixels,
jittered by --eval_sigmas, --eval_vertices vertices; mean IoU at the crop's full
resolution, the 128 band ignored. The nets scored are the final ones of each seed.
That tests the paper's claim that width helps validation but not the user's outlines.
"""
import csv
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

import singleseg_jax as ss
from experiments import cli, figures, outline_protocol, train
from singleseg_jax.fit import fit, fit_seeds, fixed_data, init_state, stack_states
from singleseg_jax.train import epoch_update

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Base configuration (e.g. cat.py).")
flags.DEFINE_list("widths", ["0.125", "0.25", "0.5", "1", "2"], "Width multipliers.")
flags.DEFINE_integer("seeds", 3, "Seeds per width.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_bool("compare_loop", False, "Also time the first width's seeds in a loop.")
flags.DEFINE_enum("together", "auto", ["auto", "vmap", "loop"],
                  "How the seeds of one width train: 'vmap' (stacked params, one vmapped "
                  "epoch), 'loop' (one fit after another; the same results), 'auto': loop "
                  "on CPU, where XLA runs the vmapped (grouped) convolutions 2x slower than "
                  "a loop, vmap elsewhere.")
flags.DEFINE_string("mask", None, "Ground-truth mask of the config's image: adds the "
                    "sloppy-outline IoU of every net (see the module docstring).")
flags.DEFINE_list("eval_d_values", ["-4", "-2", "0", "2", "4", "6", "8"],
                  "With --mask: outline offsets in pixels at 100x100.")
flags.DEFINE_list("eval_sigmas", ["0", "2"], "With --mask: vertex jitter in pixels.")
flags.DEFINE_integer("eval_vertices", 16, "With --mask: vertices per outline.")
flags.mark_flags_as_required(["config", "out"])

BASE_IN_CHANNELS = 256


def outline_settings() -> list:
  try:
    d_values = [float(v) for v in FLAGS.eval_d_values]
    sigmas = [float(v) for v in FLAGS.eval_sigmas]
  except ValueError:
    raise ss.InputError("--eval_d_values and --eval_sigmas must be lists of numbers") from None
  if any(v < 0 for v in sigmas) or FLAGS.eval_vertices < 3:
    raise ss.InputError("--eval_sigmas must be >= 0 and --eval_vertices >= 3")
  return [outline_protocol.Setting(d, sg, FLAGS.eval_vertices, 0)
          for d in d_values for sg in sigmas]


def score_outlines(case, states, seed: int, settings) -> list[dict]:
  """Sloppy-outline IoU of each seed's net on `case` (one dict per seed)."""
  opts = outline_protocol.options("paper")
  return [outline_protocol.mean_net_iou(
      case, outline_protocol.NetRunner(st.train, case.prep.image, seed), settings, opts)
      for st in states]


def seeds_together() -> bool:
  if FLAGS.together == "auto":
    return jax.default_backend() != "cpu"
  return FLAGS.together == "vmap"


def run_width(config, image, width: float, seeds: int):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.width = width
    config.in_channels = max(1, int(round(BASE_IN_CHANNELS * width)))
  options = train.fit_options(config)
  keys = [jax.random.key(config.seed + s) for s in range(seeds)]
  t0 = time.perf_counter()

  done = [0]

  def progress(i, state, record):  # every 10th epoch: rate and ETA over all seeds
    done[0] += 1
    if record["epoch"] % 10 == 0 or record["epoch"] == 1:
      per = (time.perf_counter() - t0) / done[0]
      logging.info("  width %g seed %d: epoch %d/%d, val mse %.5f; %.2f s per seed-epoch, "
                   "ETA %.0f s (at most)", width, i, record["epoch"], options.num_epochs,
                   record["val_mse"], per, per * (seeds * options.num_epochs - done[0]))

  if seeds_together():
    states, reasons = fit_seeds(keys, image, options, on_epoch=progress)
  else:
    states, reasons = zip(*[fit(k, image, options,
                                on_epoch=lambda st, rec, i=i: progress(i, st, rec))
                            for i, k in enumerate(keys)])
  seconds = time.perf_counter() - t0
  params = ss.count_params(states[0].train.model())
  rows = [{"width": width, "in_channels": config.in_channels, "params": params, "seed": s,
           "epochs": st.epoch, "best_val_loss": st.plateau.best,
           "best_val_mse": st.plateau.best / (0.5 * image.size),
           "stopped": reason, "seconds_per_run": seconds / seeds,
           "seeds_trained": "vmap" if seeds_together() else "loop"}
          for s, (st, reason) in enumerate(zip(states, reasons))]
  return rows, options, keys, seconds, states


def epoch_seconds(keys, image, options, repeats: int = 3) -> dict:
  """Steady-state seconds per epoch for all seeds: one vmapped call vs a Python loop."""
  states = [init_state(k, options) for k in keys]
  data = [fixed_data(k, image, options)[0] for k in keys]
  stacked, stacked_data = stack_states(states), jax.tree.map(lambda *a: jnp.stack(a), *data)
  bs = options.batch_size
  vm = jax.jit(jax.vmap(lambda st, d, k: epoch_update(st, d, k, batch_size=bs)))
  one = jax.jit(lambda st, d, k: epoch_update(st, d, k, batch_size=bs))
  shuffle = jnp.stack(keys)

  def time_vmap():
    return jax.block_until_ready(vm(stacked, stacked_data, shuffle))

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


def main(argv):
  del argv
  widths = [float(w) for w in FLAGS.widths]
  if any(w <= 0 for w in widths) or FLAGS.seeds < 1:
    raise ss.InputError("widths must be > 0 and --seeds >= 1")
  _, prep = train.prepare(FLAGS.config)
  case = settings = None
  if FLAGS.mask:
    settings = outline_settings()
    case = outline_protocol.load_case("image", FLAGS.config.image, FLAGS.mask, FLAGS.config,
                                      FLAGS.config.crop)
    if case.full.object.mean() < outline_protocol.MIN_OBJECT_FRACTION:
      raise ss.InputError(f"--mask: the {FLAGS.config.crop} crop keeps under 1% object")
  os.makedirs(FLAGS.out, exist_ok=True)
  rows, timing = [], {}
  t_all = time.perf_counter()
  for i, w in enumerate(widths):
    got, options, keys, seconds, states = run_width(FLAGS.config, prep.image, w, FLAGS.seeds)
    if case is not None:
      for row, sc in zip(got, score_outlines(case, states, FLAGS.config.seed, settings)):
        row.update(iou_full=sc["iou_full"], bf_full=sc["bf_full"], outlines=sc["outlines"])
    rows += got
    done = time.perf_counter() - t_all
    logging.info("width %g: %d params, best val mse %s, %s%.1f s for %d seeds; ETA %.0f s", w,
                 got[0]["params"], [round(r["best_val_mse"], 5) for r in got],
                 f"outline IoU {[round(r['iou_full'], 3) for r in got]}, " if case else "",
                 seconds, FLAGS.seeds, done / (i + 1) * (len(widths) - i - 1))
    if FLAGS.compare_loop and i == 0:
      timing = {"width": w, "seeds": FLAGS.seeds, **epoch_seconds(keys, prep.image, options)}
      logging.info("vmap vs loop: %s", timing)
  with open(os.path.join(FLAGS.out, "ablation.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  iou_col = " sloppy-outline IoU (mean ± sd) |" if case else ""
  lines = ["| width | in_channels | params | seeds | epochs (mean) | best val MSE (mean ± sd) |"
           f"{iou_col} s per run |",
           "| --- | --- | --- | --- | --- | --- |" + (" --- |" if case else "") + " --- |"]
  for w in widths:
    rs = [r for r in rows if r["width"] == w]
    mse = np.array([r["best_val_mse"] for r in rs])
    iou = np.array([r["iou_full"] for r in rs]) if case else None
    lines.append(f"| {w:g} | {rs[0]['in_channels']} | {rs[0]['params']:,} | {len(rs)} | "
                 f"{np.mean([r['epochs'] for r in rs]):.0f} | {mse.mean():.5f} ± {mse.std():.5f} |"
                 + (f" {iou.mean():.3f} ± {iou.std():.3f} |" if case else "")
                 + f" {rs[0]['seconds_per_run']:.1f} |")
  if case:
    lines += ["", f"IoU: the final net of each seed on {rows[0]['outlines']} simulated outlines "
              f"(d in {FLAGS.eval_d_values} px, sigma in {FLAGS.eval_sigmas} px, "
              f"{FLAGS.eval_vertices} vertices), full resolution, band ignored."]
  if timing:
    lines.append("")
    lines.append(f"One epoch of all {timing['seeds']} seeds at width {timing['width']:g}, after "
                 f"compilation: vmapped {timing['vmap_s_per_epoch']:.2f} s, Python loop "
                 f"{timing['loop_s_per_epoch']:.2f} s (speed-up "
                 f"x{timing['loop_s_per_epoch'] / timing['vmap_s_per_epoch']:.2f}).")
  with open(os.path.join(FLAGS.out, "ablation.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(FLAGS.out, "ablation.json"), "w") as f:
    json.dump({"config": json.loads(FLAGS.config.to_json_best_effort()), "timing": timing}, f)
  figures.scatter_by_group(rows, "params", ["best_val_mse"] + (["iou_full"] if case else []),
                           "width", os.path.join(FLAGS.out, "ablation.png"), logx=True)
  print("\n".join(lines))


if __name__ == "__main__":
  cli.run(main)
