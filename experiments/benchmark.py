"""Training and inference speed of the net: python -m experiments.benchmark [flags].

Each case prints ONE JSON line (samples/s, compile time, analytic and XLA FLOPs,
GFLOP/s, MFU against a stated peak, peak memory, and optionally the torch peer's
rate measured side by side). Examples:

  python -m experiments.benchmark                         # C=256, width 1, batch 50
  python -m experiments.benchmark --batch 16 --mode both
  python -m experiments.benchmark --stock --seconds 10    # plain-autodiff layer
  python -m experiments.benchmark --peer_python /work/torchvenv/bin/python --seconds 30
  python -m experiments.benchmark --malloc_tune ...       # see below
  python -m experiments.benchmark --sweep --out runs/bench --seconds 4
  XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
    python -m experiments.benchmark --data_parallel        # 2 virtual CPU devices

Timing: after compilation and two warm-up steps, `--seconds` is split into
`--rounds` rounds; every step is waited for; the reported rate is the MEDIAN of the
rounds' rates (`best_samples_per_s` is the fastest round). With `--peer_python`, a
round of ours alternates with a run of `torch_peer.py` (same in_channels, width,
batch, and the same seconds per round) and `ratio_vs_peer` is the median of the
per-round ratios, so a load change hits both sides alike.

`--malloc_tune`: XLA:CPU allocates a large temporary buffer (`xla_temp_bytes`, 144 MB
for the default net with jaxlib 0.10.2) on every call. glibc serves blocks that big with
a fresh mmap and unmaps them on free, so every step pays ~40,000 page faults for new
zeroed pages (`minor_faults_per_step`; removing them made the step 10-15% faster in
paired runs here). The switch re-executes
this process once, before JAX starts, with the glibc settings in `MALLOC_ENV`: one
arena (MALLOC_ARENA_MAX=1) and no mmap (MALLOC_MMAP_MAX_=0), so the buffer comes from
the heap, which is never trimmed (MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_), plus
transparent huge pages for what is still mapped (GLIBC_TUNABLES=glibc.malloc.hugetlb=1,
glibc >= 2.35). Measured: ~40,000 -> under 10 faults per step. (MALLOC_MMAP_THRESHOLD_
alone does not help: glibc caps it at 32 MB.) It only affects this benchmark
process; the same variables can be set for any run, e.g.
  env MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=8589934592 \\
      MALLOC_TOP_PAD_=268435456 GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \\
      python -m experiments.main ...
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import statistics
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("in_channels", 256, "Input channels of the net.")
flags.DEFINE_float("width", 1.0, "Width multiplier of the hidden layers.")
flags.DEFINE_integer("batch", 50, "Samples per step.")
flags.DEFINE_float("seconds", 6.0, "Timed seconds per case and per side (split in rounds).")
flags.DEFINE_integer("rounds", 3, "Timed rounds per case (and peer runs with --peer_python).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_enum("mode", "both", ["train", "infer", "both"], "What to time.")
flags.DEFINE_bool("data_parallel", False,
                  "Shard the batch over all local devices (Mesh axis 'data'; params "
                  "replicated) and run the same jitted train_step.")
flags.DEFINE_bool("stock", False, "Use the plain-autodiff layer (Upsampler(fast_grad=False)).")
flags.DEFINE_string("peer_python", None,
                    "Python with torch: runs the torch peer side by side and reports the ratio.")
flags.DEFINE_string("peer_script", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "..", "shared", "bench", "torch_peer.py"),
                    "Path of torch_peer.py (default: the workplace's shared/bench).")
flags.DEFINE_bool("sweep", False, "Sweep batch sizes x widths; writes CSV and PNG to --out.")
flags.DEFINE_list("sweep_batches", ["1", "8", "16", "32", "50", "100"], "Batches of --sweep.")
flags.DEFINE_list("sweep_widths", ["0.25", "0.5", "1", "2"],
                  "Widths of --sweep (in_channels = 256 * width).")
flags.DEFINE_string("out", "runs/benchmark", "Folder for the sweep's CSV and PNG.")
flags.DEFINE_bool("malloc_tune", False,
                  "Re-exec once with glibc MALLOC_* settings that keep freed memory "
                  "(see the module docstring).")
flags.DEFINE_float("peak_seconds", 1.5, "Seconds of the peak matmul measurement (CPU).")

#: glibc settings used by --malloc_tune (see the module docstring).
MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(8 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}
MALLOC_TUNABLES = "glibc.malloc.hugetlb=1"
_TUNED_MARK = "SINGLESEG_BENCH_MALLOC_TUNED"

#: Keys every case's JSON line carries (tests check them).
KEYS = ("impl", "platform", "device_kind", "num_devices", "devices_used", "in_channels",
        "width", "batch", "dtype", "mode", "params", "samples_per_s", "steps_per_s",
        "best_samples_per_s", "timing", "compile_s", "train_flops_per_step",
        "train_gflops_per_s", "xla_flops_per_step", "analytic_over_xla", "xla_temp_bytes",
        "peak_gflops", "peak_source", "mfu", "peak_memory_bytes", "peak_memory_source",
        "minor_faults_per_step", "infer_samples_per_s", "infer_compile_s",
        "infer_gflops_per_s", "infer_mfu", "infer_xla_flops", "infer_analytic_over_xla",
        "malloc_tune", "loadavg")


def malloc_tuned() -> bool:
  return os.environ.get(_TUNED_MARK) == "1"


def reexec_with_malloc_env() -> None:
  """Replaces this process by the same command with MALLOC_ENV set (once)."""
  env = dict(os.environ, **MALLOC_ENV, **{_TUNED_MARK: "1"})
  tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
  env["GLIBC_TUNABLES"] = ":".join(tunables + [MALLOC_TUNABLES])
  argv = list(getattr(sys, "orig_argv", [sys.executable] + sys.argv))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + argv[1:], env)


# Heavy imports after the flag definitions: --malloc_tune re-executes before JAX starts
# its backend (importing jax creates no XLA threads; `jax.devices()` does).
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import singleseg_jax as ss  # noqa: E402
from singleseg_jax import benchmarking as bm  # noqa: E402
from singleseg_jax.fit import DTYPES  # noqa: E402


def make_state(in_channels: int, width: float, *, dtype: str = "float32", stock: bool = False,
               seed: int = 0) -> ss.TrainState:
  model = ss.Upsampler(in_channels, width, dtype=DTYPES[dtype], fast_grad=not stock,
                       rngs=nnx.Rngs(seed))
  return ss.TrainState.create(model, ss.make_optimizer())


def make_batch(batch: int, in_channels: int, seed: int = 1) -> dict:
  kx, ky = jax.random.split(jax.random.PRNGKey(seed))
  side = ss.model.INPUT_SIDE
  out = ss.model.layer_sides()[-1]
  return {"inputs": jax.random.uniform(kx, (batch, side, side, in_channels), jnp.float32),
          "targets": jax.random.uniform(ky, (batch, out, out, 3), jnp.float32)}


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all local devices)."""
  devices = list(devices or jax.local_devices())
  return jax.sharding.Mesh(np.array(devices), ("data",))


def shard_for_data_parallel(state, batch: dict, mesh):
  """Params/optimiser state replicated, the batch split along axis 0 over 'data'."""
  n = mesh.shape["data"]
  b = batch["inputs"].shape[0]
  if b % n:
    raise ss.InputError(f"batch {b} does not split over {n} devices")
  state = jax.device_put(state, NamedSharding(mesh, P()))
  batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
  return state, batch


def _forward(graphdef, params, x):
  return nnx.merge(graphdef, params)(x)


def _minor_faults() -> int:
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run_peer(python: str, in_channels: int, width: float, batch: int, seconds: float) -> dict:
  """One run of the torch peer (its own process); returns its JSON line as a dict."""
  cmd = [python, FLAGS.peer_script, "--in_channels", str(in_channels), "--width", str(width),
         "--batch", str(batch), "--seconds", str(seconds)]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def bench_case(in_channels: int, width: float, batch: int, *, dtype: str = "float32",
               mode: str = "both", seconds: float = 6.0, rounds: int = 3,
               data_parallel: bool = False, stock: bool = False, peak: bm.Peak | None = None,
               peer_python: str | None = None) -> dict:
  """Times one configuration; returns the record that is printed as one JSON line."""
  dev = jax.devices()[0]
  mesh = data_mesh() if data_parallel else None
  state = make_state(in_channels, width, dtype=dtype, stock=stock)
  data = make_batch(batch, in_channels)
  if mesh is not None:
    state, data = shard_for_data_parallel(state, data, mesh)
  params = sum(int(p.size) for p in jax.tree.leaves(state.params))
  peak = peak or bm.peak_gflops(dev, dtype)
  fwd_flops = ss.flops_per_sample(in_channels, width) * batch
  train_flops = bm.train_flops_per_sample(in_channels, width) * batch
  per_round = seconds / rounds
  rec = {k: None for k in KEYS}
  rec.update(
      impl="jax-stock-autodiff" if stock else "jax-custom-vjp",
      platform=dev.platform, device_kind=dev.device_kind, num_devices=jax.device_count(),
      devices_used=mesh.shape["data"] if mesh is not None else 1,
      in_channels=in_channels, width=width, batch=batch, dtype=dtype, mode=mode,
      params=params, train_flops_per_step=train_flops,
      timing=f"median of {rounds} rounds of {per_round:.3g} s after 2 warm-up calls; "
             "every call waited for",
      peak_gflops=peak.gflops, peak_source=peak.source, malloc_tune=malloc_tuned(),
      loadavg=os.getloadavg()[0])

  if mode in ("infer", "both"):
    forward = jax.jit(_forward, static_argnums=0)
    t0 = time.perf_counter()
    fc = forward.lower(state.graphdef, state.params, data["inputs"]).compile()
    rec["infer_compile_s"] = time.perf_counter() - t0
    rec["infer_xla_flops"] = bm.xla_flops(fc)
    if rec["infer_xla_flops"]:
      rec["infer_analytic_over_xla"] = fwd_flops / rec["infer_xla_flops"]
    t = bm.time_calls(lambda: fc(state.params, data["inputs"]), seconds=seconds / 2,
                      rounds=rounds)
    rec["infer_samples_per_s"] = t.median * batch
    rec["infer_gflops_per_s"] = t.median * fwd_flops / 1e9
    rec["infer_mfu"] = bm.mfu(rec["infer_gflops_per_s"], peak.gflops)

  if mode in ("train", "both"):
    t0 = time.perf_counter()
    compiled = ss.train_step.lower(state, data).compile()
    rec["compile_s"] = time.perf_counter() - t0
    rec["xla_flops_per_step"] = bm.xla_flops(compiled)
    if rec["xla_flops_per_step"]:
      rec["analytic_over_xla"] = train_flops / rec["xla_flops_per_step"]
    rec["xla_temp_bytes"] = bm.xla_temp_bytes(compiled)
    box = [state]

    def step():
      box[0], metrics = compiled(box[0], data)
      return metrics["loss"]

    for _ in range(2):
      jax.block_until_ready(step())
    rates, peer_rates, ratios = [], [], []
    faults0, calls = _minor_faults(), 0
    for _ in range(rounds):
      t = bm.time_calls(step, seconds=per_round, rounds=1, warmup=0)
      rates.append(t.median)
      calls += t.calls
      if peer_python:
        faults_before_peer = _minor_faults()
        peer = run_peer(peer_python, in_channels, width, batch, per_round)
        faults0 += _minor_faults() - faults_before_peer  # (children are not counted anyway)
        peer_rates.append(peer["samples_per_s"])
        ratios.append(t.median * batch / peer["samples_per_s"])
    rec["minor_faults_per_step"] = (_minor_faults() - faults0) / calls
    rec["steps_per_s"] = statistics.median(rates)
    rec["samples_per_s"] = rec["steps_per_s"] * batch
    rec["best_samples_per_s"] = max(rates) * batch
    rec["train_gflops_per_s"] = rec["steps_per_s"] * train_flops / 1e9
    rec["mfu"] = bm.mfu(rec["train_gflops_per_s"], peak.gflops)
    if peer_python:
      rec["peer_samples_per_s"] = statistics.median(peer_rates)
      rec["peer_rounds_samples_per_s"] = peer_rates
      rec["rounds_samples_per_s"] = [r * batch for r in rates]
      rec["ratio_vs_peer"] = statistics.median(ratios)

  mem, src = bm.peak_memory(dev)
  rec["peak_memory_bytes"], rec["peak_memory_source"] = mem, src
  return rec


def _plot(rows: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  widths = sorted({r["width"] for r in rows})
  for w in widths:
    rs = sorted((r for r in rows if r["width"] == w), key=lambda r: r["batch"])
    b = [r["batch"] for r in rs]
    line, = axes[0].plot(b, [r["samples_per_s"] or r["infer_samples_per_s"] for r in rs], "o-",
                         label=f"width {w:g} (C={rs[0]['in_channels']})")
    if any(r.get("peer_samples_per_s") for r in rs):
      axes[0].plot(b, [r.get("peer_samples_per_s") or np.nan for r in rs], "x--",
                   color=line.get_color(), label=f"torch, width {w:g}")
    axes[1].plot(b, [100 * (r["mfu"] or 0) for r in rs], "o-", color=line.get_color())
  for ax, label in zip(axes, ("training samples / s", "MFU (%)")):
    ax.set_xscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
  axes[0].set_yscale("log")
  axes[0].legend(fontsize=7)
  r0 = rows[0]
  fig.suptitle(f"{r0['impl']} {r0['dtype']} on {r0['device_kind']} ({r0['platform']}); "
               f"peak {r0['peak_gflops']:.0f} GFLOP/s ({r0['peak_source'][:40]})", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def sweep(batches, widths, out: str, **kw) -> list[dict]:
  """Every batch x width (in_channels = 256 * width); one JSON line each, CSV + PNG."""
  os.makedirs(out, exist_ok=True)
  rows = []
  for w in widths:
    for b in batches:
      rec = bench_case(max(1, int(round(256 * w))), w, b, **kw)
      print(json.dumps(rec), flush=True)
      rows.append(rec)
  fields = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], list)))
  with open(os.path.join(out, "sweep.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
  _plot(rows, os.path.join(out, "sweep.png"))
  return rows


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if FLAGS.malloc_tune and not malloc_tuned():
    reexec_with_malloc_env()
  if FLAGS.seconds <= 0 or FLAGS.rounds < 1:
    raise ss.InputError("--seconds must be > 0 and --rounds >= 1")
  dev = jax.devices()[0]
  peak = bm.peak_gflops(dev, FLAGS.dtype, matmul_seconds=FLAGS.peak_seconds)
  kw = dict(dtype=FLAGS.dtype, mode=FLAGS.mode, seconds=FLAGS.seconds, rounds=FLAGS.rounds,
            data_parallel=FLAGS.data_parallel, stock=FLAGS.stock, peak=peak,
            peer_python=FLAGS.peer_python)
  if FLAGS.sweep:
    sweep([int(b) for b in FLAGS.sweep_batches], [float(w) for w in FLAGS.sweep_widths],
          FLAGS.out, **kw)
  else:
    rec = bench_case(FLAGS.in_channels, FLAGS.width, FLAGS.batch, **kw)
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
  from experiments import cli
  cli.run(main)
