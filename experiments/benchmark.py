"""Speed of the net: python -m experiments.benchmark [flags]; `singleseg_jax.speed` does
the work and says how it counts (FLOPs, peaks, MFU, memory). Each case prints ONE JSON
line; the timed rate is the median of --rounds rounds. Examples:

  python -m experiments.benchmark                           # C=256, width 1, batch 50
  python -m experiments.benchmark --mode all --layer stock   # plain autodiff, with an epoch
  python -m experiments.benchmark --size 200 --batch 10      # the net for 200x200 from 20x20
  python -m experiments.benchmark --peer_python=PY --peer_script=torch_peer.py --seconds 30
  python -m experiments.benchmark --sweep --out runs/bench --seconds 4
  python -m experiments.benchmark --suite=accelerator --out runs/acc   # README, Speed
  python -m experiments.benchmark --layer_forms --seconds 12 --rounds 6  # per layer, Winograd
  python -m experiments.benchmark --layer_forms --microbatch 10          # per layer, in chunks
  python -m experiments.benchmark --compare_layers=custom,winograd --seconds 96 --rounds 16

--peer_python alternates each round of ours with a run of the torch peer (`ratio_vs_peer`:
the median of the per-round ratios). Like every main, this one asks glibc to keep XLA:CPU's
per-call scratch buffer on the heap (`memory.keep_freed_memory`; off with
SINGLESEG_KEEP_MEMORY=0); --malloc_tune re-executes the process once with the stronger
`cli.MALLOC_ENV`, and --peer_malloc_tune gives that to the peer.
"""
import json
import os

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from singleseg_jax import speed
from singleseg_jax.paper.layers import LAYER_CHOICES

FLAGS = flags.FLAGS
flags.DEFINE_integer("in_channels", 256, "Input channels of the net.")
flags.DEFINE_float("width", 1.0, "Width multiplier of the hidden layers.")
flags.DEFINE_integer("size", 100, "Output side of the net (the config's size; the net is "
                     "derived from it and --scale, singleseg_jax.paper.model.layer_table).")
flags.DEFINE_float("scale", 0.1, "Thumbnail side / size (the config's scale).")
flags.DEFINE_integer("batch", 50, "Samples per step (also the suite's).")
flags.DEFINE_float("seconds", 6.0, "Timed seconds per part of a case (the suite: default from "
                   "its budget).")
flags.DEFINE_integer("rounds", 3, "Timed rounds per part (and peer runs with --peer_python).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_string("mode", "both", "What to time: train, infer, epoch, joined by commas, or "
                    "both (train,infer) or all.")
flags.DEFINE_enum("layer", "auto", list(LAYER_CHOICES), "How the layers are "
                  "differentiated (the config key `layer`).")
flags.DEFINE_integer("microbatch", 0, "Samples per gradient chunk (the config's microbatch; "
                     "0: auto, chunks of 10 on CPU, the whole batch elsewhere; with --layer_forms, "
                     "the whole batch).")
flags.DEFINE_integer("epoch_pairs", 750, "Training pairs of a timed epoch (the cat run's).")
flags.DEFINE_bool("data_parallel", False, "Shard the batch over all local devices (mesh axis "
                  "'data'; params replicated) and run the same jitted train_step.")
flags.DEFINE_string("peer_python", None, "Python with torch: runs the peer side by side.")
flags.DEFINE_string("peer_script", None, "The torch peer script (with --peer_python).")
flags.DEFINE_bool("sweep", False, "Sweep batch sizes x widths; writes CSV and PNG to --out.")
flags.DEFINE_list("sweep_batches", ["1", "8", "16", "32", "50", "100"], "Batches of --sweep.")
flags.DEFINE_list("sweep_widths", ["0.25", "0.5", "1", "2"],
                  "Widths of --sweep (in_channels = 256 * width).")
flags.DEFINE_enum("suite", None, ["accelerator"], "Run the accelerator check instead: a "
                  "table of --suite_cases and a full run of --config, in --suite_seconds.")
flags.DEFINE_float("suite_seconds", 480.0, "The suite's time budget.")
flags.DEFINE_list("suite_cases", [c.spec for c in speed.ACCELERATOR_CASES],
                  "The suite's cases, each in_channels:width:layer:dtype.")
flags.DEFINE_list("suite_populations", [c.spec for c in speed.POPULATION_CASES],
                  "The suite's population nets, each in_channels:width:layer:dtype.")
flags.DEFINE_list("suite_population_sizes", list(map(str, speed.POPULATION_SIZES)),
                  "Nets trained together in each population entry.")
config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "default.py"),
    "The suite's full run (--config.num_epochs caps its epochs).")
flags.DEFINE_string("out", "runs/benchmark", "Folder for the sweep's or the suite's files.")
flags.DEFINE_bool("malloc_tune", False, "Re-exec once with glibc's MALLOC_* settings "
                  "(cli.MALLOC_ENV: one arena, no mmap, no trimming, huge pages), in place "
                  "of what every main sets (see the module docstring).")
flags.DEFINE_bool("peer_malloc_tune", False, "Run the torch peer with those glibc settings "
                  "whether or not this process has them (each side at its best: they speed "
                  "the peer up and, with microbatches, slow ours down).")
flags.DEFINE_bool("layer_forms", False, "Time each layer's forward + backward instead, the "
                  "stride-1 ones as custom, Winograd F(2x2,3x3) and F(4x4,3x3) in paired "
                  "rounds (one JSON line per layer and form; --seconds per layer; calls of "
                  "--microbatch samples, 0: the whole batch; ms per --batch).")
flags.DEFINE_list("compare_layers", None, "Time the train step with each of these layers in "
                  "paired alternating rounds instead (e.g. custom,winograd, or "
                  "winograd:50,winograd:10 with samples per gradient chunk): their ratios "
                  "to the first.")
flags.DEFINE_float("peak_seconds", 1.5, "Seconds of the peak matmul measurement (CPU).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if FLAGS.malloc_tune and not cli.malloc_tuned():
    cli.reexec_with_malloc_env()
  common = dict(batch=FLAGS.batch, rounds=FLAGS.rounds, epoch_pairs=FLAGS.epoch_pairs,
                peak_seconds=FLAGS.peak_seconds)
  if FLAGS.compare_layers:
    print(json.dumps(speed.compare_layers(FLAGS.compare_layers, FLAGS.in_channels, FLAGS.width,
                                          FLAGS.batch, seconds=FLAGS.seconds,
                                          rounds=FLAGS.rounds)), flush=True)
    return
  if FLAGS.layer_forms:
    for rec in speed.time_layer_forms(FLAGS.in_channels, FLAGS.width, FLAGS.batch,
                                      seconds=FLAGS.seconds, rounds=FLAGS.rounds,
                                      microbatch=FLAGS.microbatch):
      print(json.dumps(rec), flush=True)
    return
  if FLAGS.suite:
    given = not FLAGS["seconds"].using_default_value  # else the suite sizes it to its budget
    speed.accelerator_suite(FLAGS.out, FLAGS.config, cases=speed.parse_cases(FLAGS.suite_cases),
                            populations=speed.parse_cases(FLAGS.suite_populations),
                            population_sizes=speed.parse_sizes(FLAGS.suite_population_sizes),
                            seconds=FLAGS.suite_seconds, case_seconds=FLAGS.seconds if given
                            else None, **common)
    return
  speed.benchmark(FLAGS.in_channels, FLAGS.width, seconds=FLAGS.seconds, dtype=FLAGS.dtype,
                  mode=FLAGS.mode, layer=FLAGS.layer, size=FLAGS.size, scale=FLAGS.scale,
                  microbatch=FLAGS.microbatch, data_parallel=FLAGS.data_parallel,
                  peer_env=cli.malloc_env() if FLAGS.peer_malloc_tune else None,
                  peer_python=FLAGS.peer_python, peer_script=FLAGS.peer_script,
                  sweep_batches=FLAGS.sweep_batches if FLAGS.sweep else None,
                  sweep_widths=FLAGS.sweep_widths, out=FLAGS.out, malloc_tune=cli.malloc_tuned(),
                  on_case=lambda rec: print(json.dumps(rec), flush=True), **common)


if __name__ == "__main__":
  cli.run(main)
