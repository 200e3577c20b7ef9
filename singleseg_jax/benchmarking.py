"""Speed arithmetic for the benchmark: FLOP counts, XLA's own count, peaks, MFU, timing.

Pure helpers; the entry point is `experiments/benchmark.py`. Nothing here changes the
process (no environment variables, no allocator settings).

FLOP conventions: one multiply-add is 2 FLOPs. The forward pass of the net costs
`model.flops_per_sample` (every input pixel meets the 9 kernel taps of each layer,
the MATLAB crop's discarded border included). A training step costs 3x the forward
pass (forward, input gradient, kernel gradient), the usual convention and the torch
peer's. XLA's `cost_analysis()` of the forward pass reports somewhat less, because it
skips the taps that land in the cropped border (see `tests/test_benchmark.py`).
"""
from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from singleseg_jax.model import flops_per_sample

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
    return statistics.median(self.rates)

  @property
  def best(self) -> float:
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
