"""Training and inference speed of the net: python -m experiments.benchmark [flags].

Each case prints ONE JSON line (samples/s, compile time, analytic and XLA FLOPs,
GFLOP/s, MFU against a stated peak, peak memory, and with --peer_python the torch
peer's rate measured side by side; `singleseg_jax.speed` computes them). Examples:

  python -m experiments.benchmark                         # C=256, width 1, batch 50
  python -m experiments.benchmark --batch 16 --mode both
  python -m experiments.benchmark --stock --seconds 10    # plain-autodiff layer
  python -m experiments.benchmark --peer_python=PY --peer_script=torch_peer.py --seconds 30
  python -m experiments.benchmark --sweep --out runs/bench --seconds 4
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
    python -m experiments.benchmark --data_parallel        # 2 virtual CPU devices

Timing: after compilation and two warm-up steps, --seconds is split into --rounds
rounds; every step is waited for; the rate is the MEDIAN of the rounds' rates. With
--peer_python, each round of ours alternates with a run of the peer (same net, batch
and seconds) and `ratio_vs_peer` is the median of the per-round ratios, so a load
change hits both sides alike: this machine's speed drifts, so compare only so, over
many rounds.

--malloc_tune re-executes the process once, before JAX starts, with glibc settings
that keep XLA:CPU's large per-call temporary buffer on the heap instead of a fresh
mmap per step (`cli.MALLOC_ENV`; the page faults it removes are `minor_faults_per_step`).
"""
import json

import jax
from absl import app, flags

from experiments import cli
from singleseg_jax import speed
from singleseg_jax.errors import InputError

FLAGS = flags.FLAGS
flags.DEFINE_integer("in_channels", 256, "Input channels of the net.")
flags.DEFINE_float("width", 1.0, "Width multiplier of the hidden layers.")
flags.DEFINE_integer("batch", 50, "Samples per step.")
flags.DEFINE_float("seconds", 6.0, "Timed seconds per case and per side (split in rounds).")
flags.DEFINE_integer("rounds", 3, "Timed rounds per case (and peer runs with --peer_python).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_enum("mode", "both", ["train", "infer", "both"], "What to time.")
flags.DEFINE_bool("data_parallel", False, "Shard the batch over all local devices (mesh axis "
                  "'data'; params replicated) and run the same jitted train_step.")
flags.DEFINE_bool("stock", False, "Use the plain-autodiff layer (Upsampler(fast_grad=False)).")
flags.DEFINE_string("peer_python", None, "Python with torch: runs the peer side by side.")
flags.DEFINE_string("peer_script", None, "The torch peer script (with --peer_python).")
flags.DEFINE_bool("sweep", False, "Sweep batch sizes x widths; writes CSV and PNG to --out.")
flags.DEFINE_list("sweep_batches", ["1", "8", "16", "32", "50", "100"], "Batches of --sweep.")
flags.DEFINE_list("sweep_widths", ["0.25", "0.5", "1", "2"],
                  "Widths of --sweep (in_channels = 256 * width).")
flags.DEFINE_string("out", "runs/benchmark", "Folder for the sweep's CSV and PNG.")
flags.DEFINE_bool("malloc_tune", False, "Re-exec once with glibc MALLOC_* settings that keep "
                  "freed memory (see the module docstring).")
flags.DEFINE_float("peak_seconds", 1.5, "Seconds of the peak matmul measurement (CPU).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if FLAGS.malloc_tune and not cli.malloc_tuned():
    cli.reexec_with_malloc_env()
  if FLAGS.seconds <= 0 or FLAGS.rounds < 1:
    raise InputError("--seconds must be > 0 and --rounds >= 1")
  if FLAGS.peer_python and not FLAGS.peer_script:
    raise InputError("--peer_python needs --peer_script (the torch peer's path)")
  peak = speed.peak_gflops(jax.devices()[0], FLAGS.dtype, matmul_seconds=FLAGS.peak_seconds)
  kw = dict(dtype=FLAGS.dtype, mode=FLAGS.mode, seconds=FLAGS.seconds, rounds=FLAGS.rounds,
            data_parallel=FLAGS.data_parallel, stock=FLAGS.stock, peak=peak,
            peer_python=FLAGS.peer_python, peer_script=FLAGS.peer_script,
            malloc_tune=cli.malloc_tuned())
  show = lambda rec: print(json.dumps(rec), flush=True)
  if FLAGS.sweep:
    speed.sweep([int(b) for b in FLAGS.sweep_batches], [float(w) for w in FLAGS.sweep_widths],
                FLAGS.out, on_case=show, **kw)
  else:
    show(speed.bench_case(FLAGS.in_channels, FLAGS.width, FLAGS.batch, **kw))


if __name__ == "__main__":
  cli.run(main)
