"""Speed of the paper's net: FLOP counts, XLA's own count, device peaks, MFU, timed
cases and sweeps (the entry point is `experiments/benchmark.py`).

Nothing here changes the process (no environment variables, no allocator settings).

FLOP conventions: one multiply-add is 2 FLOPs. The forward pass of the net costs
`model.flops_per_sample` (every input pixel meets the 9 kernel taps of each layer,
the MATLAB crop's discarded border included). A training step costs 3x the forward
pass (forward, input gradient, kernel gradient), the usual convention and the torch
peer's. XLA's `cost_analysis()` of the forward pass reports somewhat less, because it
skips the taps that land in the cropped border (see `tests/test_benchmark.py`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from singleseg_jax import figures, tables
from singleseg_jax.errors import InputError
from singleseg_jax.paper.model import DTYPES, INPUT_SIDE, OUTPUT_SIDE, Upsampler, flops_per_sample
from singleseg_jax.train import TrainState, make_optimizer, train_step

#: Dense peak TFLOP/s by `device_kind` substring and dtype, from the vendors' data
#: sheets (NVIDIA H100 Tensor Core GPU datasheet, SXM5: 989.4 TFLOP/s bf16 dense,
#: 66.9 TFLOP/s fp32 without TF32 (494.7 with TF32); H200 SXM: same chip and
#: clocks, so the same figures; A100 SXM4: 312 bf16 dense, 19.5 fp32). "H100 PCIe":
#: 756 bf16 dense, 51 fp32. Checked in order, first match wins.
GPU_PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bfloat16": 756.0, "float32": 51.2}),
    ("H100", {"bfloat16": 989.4, "float32": 66.9}),
    ("H200", {"bfloat16": 989.4, "float32": 66.9}),
    ("A100", {"bfloat16": 312.0, "float32": 19.5}),
)


def train_flops_per_sample(in_channels: int, width: float = 1.0) -> int:
  """FLOPs of one training sample: 3x the forward pass."""
  return 3 * flops_per_sample(in_channels, width)


def xla_flops(compiled) -> float | None:
  """FLOPs XLA's cost analysis reports for a compiled executable (None if it says nothing)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return None
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


def xla_temp_bytes(compiled) -> int | None:
  """Size of the temporary buffer XLA allocates per call (None if unknown)."""
  try:
    mem = compiled.memory_analysis()
  except Exception:
    return None
  return None if mem is None else int(getattr(mem, "temp_size_in_bytes", 0))


def mfu(achieved_gflops: float | None, peak_gflops: float | None) -> float | None:
  """Model FLOP utilisation: achieved / peak (None when either is unknown)."""
  if not achieved_gflops or not peak_gflops:
    return None
  return achieved_gflops / peak_gflops


def gpu_peak_gflops(device_kind: str, dtype: str) -> float | None:
  """Data-sheet dense peak for a GPU kind and compute dtype, in GFLOP/s (None if unknown)."""
  for key, table in GPU_PEAK_TFLOPS:
    if key.lower() in device_kind.lower():
      return 1e3 * table[dtype] if dtype in table else None
  return None


@dataclasses.dataclass(frozen=True)
class Peak:
  """The peak MFU is measured against, and where it comes from."""
  gflops: float | None
  source: str


def measure_matmul_peak(n: int = 2048, dtype=jnp.float32, seconds: float = 1.5,
                        device=None) -> Peak:
  """Best rate of a jitted (n, n) @ (n, n) product, repeated: a practical machine peak.

  Returns the best single-call rate (GFLOP/s) over calls made for about `seconds`
  after one warm-up call.
  """
  device = device or jax.devices()[0]
  key = jax.random.PRNGKey(0)
  a = jax.device_put(jax.random.normal(key, (n, n), dtype), device)
  b = jax.device_put(jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype), device)
  mm = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(mm(a, b))
  best, t_end = float("inf"), time.perf_counter() + seconds
  calls = 0
  while calls < 3 or time.perf_counter() < t_end:
    t0 = time.perf_counter()
    jax.block_until_ready(mm(a, b))
    best = min(best, time.perf_counter() - t0)
    calls += 1
  gflops = 2 * n ** 3 / best / 1e9
  name = jnp.dtype(dtype).name
  return Peak(gflops, f"measured: best of {calls} jitted {n}x{n} @ {n}x{n} {name} matmuls")


def peak_gflops(device, dtype: str, *, matmul_seconds: float = 1.5) -> Peak:
  """The peak MFU is measured against: data sheet for known GPUs, else a measured matmul."""
  if device.platform == "gpu":
    g = gpu_peak_gflops(device.device_kind, dtype)
    if g:
      return Peak(g, f"data sheet, dense {dtype}, {device.device_kind}")
  return measure_matmul_peak(dtype=jnp.dtype(dtype), seconds=matmul_seconds, device=device)


@dataclasses.dataclass(frozen=True)
class Timing:
  """Rates of `rounds` timed rounds; `median` is the reported figure, `best` the fastest."""
  rates: tuple[float, ...]   # calls per second in each round
  calls: int

  @property
  def median(self) -> float:
    """The median round's rate."""
    return statistics.median(self.rates)

  @property
  def best(self) -> float:
    """The fastest round's rate."""
    return max(self.rates)


def time_calls(call: Callable[[], Any], *, seconds: float, rounds: int = 3,
               warmup: int = 2) -> Timing:
  """Calls `call()` (which must return what to wait for) for `seconds` in `rounds` rounds.

  Every call is waited for (`jax.block_until_ready`), so asynchronous dispatch never
  queues work past a round's end. Each round runs at least one call.
  """
  for _ in range(warmup):
    jax.block_until_ready(call())
  rates, total = [], 0
  per_round = seconds / rounds
  for _ in range(rounds):
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < per_round:
      jax.block_until_ready(call())
      n += 1
    rates.append(n / (time.perf_counter() - t0))
    total += n
  return Timing(tuple(rates), total)


def peak_memory(device) -> tuple[int | None, str]:
  """(bytes, source): the backend's peak for accelerators, else the process's max RSS."""
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:
    pass
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device.memory_stats peak_bytes_in_use"
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB
  return int(rss * scale), "process max RSS (getrusage; whole process, monotone over cases)"


#: Keys every case's record carries (tests check them).
KEYS = ("impl", "platform", "device_kind", "num_devices", "devices_used", "in_channels",
        "width", "batch", "dtype", "mode", "params", "samples_per_s", "steps_per_s",
        "best_samples_per_s", "timing", "compile_s", "train_flops_per_step",
        "train_gflops_per_s", "xla_flops_per_step", "analytic_over_xla", "xla_temp_bytes",
        "peak_gflops", "peak_source", "mfu", "peak_memory_bytes", "peak_memory_source",
        "minor_faults_per_step", "infer_samples_per_s", "infer_compile_s",
        "infer_gflops_per_s", "infer_mfu", "infer_xla_flops", "infer_analytic_over_xla",
        "malloc_tune", "loadavg")


def make_state(in_channels: int, width: float, *, dtype: str = "float32", stock: bool = False,
               seed: int = 0) -> TrainState:
  """A fresh paper net and optimiser (`stock`: the plain-autodiff layer)."""
  model = Upsampler(in_channels, width, dtype=DTYPES[dtype], fast_grad=not stock,
                    rngs=nnx.Rngs(seed))
  return TrainState.create(model, make_optimizer())


def make_batch(batch: int, in_channels: int, seed: int = 1) -> dict:
  """A random batch of inputs and targets of the net's shapes."""
  kx, ky = jax.random.split(jax.random.PRNGKey(seed))
  return {"inputs": jax.random.uniform(kx, (batch, INPUT_SIDE, INPUT_SIDE, in_channels),
                                       jnp.float32),
          "targets": jax.random.uniform(ky, (batch, OUTPUT_SIDE, OUTPUT_SIDE, 3), jnp.float32)}


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all local devices)."""
  devices = list(devices or jax.local_devices())
  return jax.sharding.Mesh(np.array(devices), ("data",))


def shard_for_data_parallel(state, batch: dict, mesh):
  """(state, batch): params/optimiser state replicated, the batch split over 'data'."""
  n = mesh.shape["data"]
  b = batch["inputs"].shape[0]
  if b % n:
    fits = [k * n for k in range(1, 4)]
    raise InputError(f"batch {b} does not split over {n} devices: use a multiple of {n} "
                     f"(e.g. {', '.join(map(str, fits))})")
  state = jax.device_put(state, NamedSharding(mesh, P()))
  batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
  return state, batch


def _forward(graphdef, params, x):
  return nnx.merge(graphdef, params)(x)


def _minor_faults() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run_peer(python: str, script: str, in_channels: int, width: float, batch: int,
             seconds: float) -> dict:
  """One run of the torch peer (its own process); returns its JSON line as a dict."""
  cmd = [python, script, "--in_channels", str(in_channels), "--width", str(width),
         "--batch", str(batch), "--seconds", str(seconds)]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def bench_case(in_channels: int, width: float, batch: int, *, dtype: str = "float32",
               mode: str = "both", seconds: float = 6.0, rounds: int = 3,
               data_parallel: bool = False, stock: bool = False, peak: Peak | None = None,
               peer_python: str | None = None, peer_script: str | None = None,
               malloc_tune: bool = False) -> dict:
  """Times one configuration; returns the record that is printed as one JSON line.

  With `data_parallel`, FLOPs, rates and the peak count every device used: XLA's cost
  analysis of a sharded program is per shard, so it is multiplied by the devices, and
  MFU is measured against the peak of all of them.
  """
  dev = jax.devices()[0]
  mesh = data_mesh() if data_parallel else None
  devices = mesh.shape["data"] if mesh is not None else 1
  state = make_state(in_channels, width, dtype=dtype, stock=stock)
  data = make_batch(batch, in_channels)
  if mesh is not None:
    state, data = shard_for_data_parallel(state, data, mesh)
  params = sum(int(p.size) for p in jax.tree.leaves(state.params))
  peak = peak or peak_gflops(dev, dtype)
  all_peak = peak.gflops * devices if peak.gflops else None
  fwd_flops = flops_per_sample(in_channels, width) * batch
  train_flops = train_flops_per_sample(in_channels, width) * batch
  per_round = seconds / rounds
  rec = {k: None for k in KEYS}
  rec.update(
      impl="jax-stock-autodiff" if stock else "jax-custom-vjp",
      platform=dev.platform, device_kind=dev.device_kind, num_devices=jax.device_count(),
      devices_used=devices, in_channels=in_channels, width=width, batch=batch, dtype=dtype,
      mode=mode, params=params, train_flops_per_step=train_flops,
      timing=f"median of {rounds} rounds of {per_round:.3g} s after 2 warm-up calls; "
             "every call waited for",
      peak_gflops=peak.gflops, peak_source=peak.source + (f", x {devices} devices"
                                                          if devices > 1 else ""),
      malloc_tune=malloc_tune, loadavg=os.getloadavg()[0])

  if mode in ("infer", "both"):
    forward = jax.jit(_forward, static_argnums=0)
    t0 = time.perf_counter()
    fc = forward.lower(state.graphdef, state.params, data["inputs"]).compile()
    rec["infer_compile_s"] = time.perf_counter() - t0
    shard_flops = xla_flops(fc)
    rec["infer_xla_flops"] = shard_flops * devices if shard_flops else None
    if rec["infer_xla_flops"]:
      rec["infer_analytic_over_xla"] = fwd_flops / rec["infer_xla_flops"]
    t = time_calls(lambda: fc(state.params, data["inputs"]), seconds=seconds / 2, rounds=rounds)
    rec["infer_samples_per_s"] = t.median * batch
    rec["infer_gflops_per_s"] = t.median * fwd_flops / 1e9
    rec["infer_mfu"] = mfu(rec["infer_gflops_per_s"], all_peak)

  if mode in ("train", "both"):
    t0 = time.perf_counter()
    compiled = train_step.lower(state, data).compile()
    rec["compile_s"] = time.perf_counter() - t0
    shard_flops = xla_flops(compiled)
    rec["xla_flops_per_step"] = shard_flops * devices if shard_flops else None
    if rec["xla_flops_per_step"]:
      rec["analytic_over_xla"] = train_flops / rec["xla_flops_per_step"]
    rec["xla_temp_bytes"] = xla_temp_bytes(compiled)
    box = [state]

    def step():
      box[0], metrics = compiled(box[0], data)
      return metrics["loss"]

    for _ in range(2):
      jax.block_until_ready(step())
    rates, peer_rates, ratios = [], [], []
    faults0, calls = _minor_faults(), 0
    for _ in range(rounds):
      t = time_calls(step, seconds=per_round, rounds=1, warmup=0)
      rates.append(t.median)
      calls += t.calls
      if peer_python:
        faults_before_peer = _minor_faults()
        peer = run_peer(peer_python, peer_script, in_channels, width, batch, per_round)
        faults0 += _minor_faults() - faults_before_peer  # this process's, spawning the peer
        peer_rates.append(peer["samples_per_s"])
        ratios.append(t.median * batch / peer["samples_per_s"])
    rec["minor_faults_per_step"] = (_minor_faults() - faults0) / calls
    rec["steps_per_s"] = statistics.median(rates)
    rec["samples_per_s"] = rec["steps_per_s"] * batch
    rec["best_samples_per_s"] = max(rates) * batch
    rec["train_gflops_per_s"] = rec["steps_per_s"] * train_flops / 1e9
    rec["mfu"] = mfu(rec["train_gflops_per_s"], all_peak)
    if peer_python:
      rec["peer_samples_per_s"] = statistics.median(peer_rates)
      rec["peer_rounds_samples_per_s"] = peer_rates
      rec["rounds_samples_per_s"] = [r * batch for r in rates]
      rec["ratio_vs_peer"] = statistics.median(ratios)

  mem, src = peak_memory(dev)
  rec["peak_memory_bytes"], rec["peak_memory_source"] = mem, src
  return rec


def sweep(batches, widths, out: str, on_case: Callable[[dict], None] = lambda rec: None,
          **kw) -> list[dict]:
  """Every batch x width (in_channels = 256 * width): `bench_case` each, `on_case(record)`
  as each finishes, then out/sweep.csv and out/sweep.png."""
  os.makedirs(out, exist_ok=True)
  rows = []
  for w in widths:
    for b in batches:
      rec = bench_case(max(1, int(round(256 * w))), w, b, **kw)
      on_case(rec)
      rows.append(rec)
  fields = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], list)))
  tables.write_csv(os.path.join(out, "sweep.csv"), rows, fields)
  figures.speed_sweep(rows, os.path.join(out, "sweep.png"))
  return rows
