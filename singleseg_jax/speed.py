"""Speed of the paper's net: FLOP counts, XLA's own count, device peaks, MFU, timed
cases, sweeps, and the accelerator check (the entry point is `experiments/benchmark.py`).

Nothing here changes the process (no environment variables, no allocator settings).

MFU is achieved FLOP/s over the peak of every device used, the peak being the data
sheet's for the unit the compute dtype runs on (`datasheet_peak`) or, on CPU and
unknown chips, a measured matmul. Memory per case is XLA's plan for one call on each
device (`xla_peak_bytes`), beside the backend's peak so far.

FLOP conventions: one multiply-add is 2 FLOPs. The forward pass of the net costs
`model.flops_per_sample` (every input pixel meets the 9 kernel taps of each layer,
the MATLAB crop's discarded border included). A training step costs 3x the forward
pass (forward, input gradient, kernel gradient), the usual convention and the torch
peer's. XLA's `cost_analysis()` of the forward pass reports somewhat less, because it
skips the taps that land in the cropped border (see `tests/test_speed.py`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from singleseg_jax import figures, tables
from singleseg_jax import run as run_lib
from singleseg_jax.errors import InputError
from singleseg_jax.fit import FitOptions
from singleseg_jax.paper.data import Dataset, num_train
from singleseg_jax.paper import layers, winograd
from singleseg_jax.paper.layers import uses_custom_vjp, uses_winograd
from singleseg_jax.paper.model import (DTYPES, LAYERS, PAPER_SCALE, PAPER_SIZE, Upsampler,
                                       flops_per_sample, layer_sides, layer_widths,
                                       winograd_forms)
from singleseg_jax.memory import freed_memory_kept
from singleseg_jax.progress import Progress
from singleseg_jax.train import (TrainState, check_microbatch, make_optimizer, num_batches,
                                 net_microbatch, train_epoch, train_step)

#: Dense peak TFLOP/s per chip by `device_kind` (a case-insensitive whole-word match; the
#: first row that matches wins, so "H100 PCIe" comes before "H100" and "TPU v5 lite"
#: before "TPU v5"). NVIDIA rows: "float32" is the CUDA-core rate, "tf32" and "bfloat16"
#: the tensor-core rates without sparsity (half the data sheets' sparse figures). TPU
#: rows give the bf16 rate alone: the MXU multiplies in bf16. Sources: NVIDIA H100 Tensor
#: Core GPU datasheet (SXM5, PCIe and NVL columns), NVIDIA H200 Tensor Core GPU datasheet
#: (SXM and NVL), NVIDIA HGX B200 specifications (per GPU), NVIDIA A100 Tensor Core GPU
#: datasheet (SXM4 and PCIe share these peaks), NVIDIA L4 Tensor Core GPU datasheet;
#: Google Cloud TPU system architecture pages for v4, v5e, v5p and v6e ("peak compute
#: per chip (bf16)"). JAX names v5e "TPU v5 lite", v6e "TPU v6 lite" and v5p "TPU v5"
#: (on a TPU VM) or "TPU v5p".
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"float32": 51.0, "tf32": 378.0, "bfloat16": 756.5}),
    ("H100 NVL", {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5}),
    ("H100", {"float32": 67.0, "tf32": 494.5, "bfloat16": 989.5}),
    ("H200 NVL", {"float32": 60.0, "tf32": 417.5, "bfloat16": 835.5}),
    ("H200", {"float32": 67.0, "tf32": 494.5, "bfloat16": 989.5}),
    ("B200", {"float32": 75.0, "tf32": 1100.0, "bfloat16": 2250.0}),
    ("A100", {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0}),
    ("L4", {"float32": 30.3, "tf32": 60.0, "bfloat16": 121.0}),
    ("TPU v5 lite", {"bfloat16": 197.0}),
    ("TPU v5e", {"bfloat16": 197.0}),
    ("TPU v6 lite", {"bfloat16": 918.0}),
    ("TPU v6e", {"bfloat16": 918.0}),
    ("TPU v5p", {"bfloat16": 459.0}),
    ("TPU v5", {"bfloat16": 459.0}),
    ("TPU v4", {"bfloat16": 275.0}),
)
#: `jax_default_matmul_precision` values that keep float32 matmuls in full float32.
_FULL_FP32 = ("highest", "float32")


def train_flops_per_sample(in_channels: int, width: float = 1.0, size: int = PAPER_SIZE,
                           scale: float = PAPER_SCALE) -> int:
  """FLOPs of one training sample: 3x the forward pass."""
  return 3 * flops_per_sample(in_channels, width, size, scale)


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


def _memory_analysis(compiled):
  try:
    return compiled.memory_analysis()
  except Exception:  # some backends do not implement it
    return None


def xla_temp_bytes(compiled) -> int | None:
  """Size of the temporary buffer XLA allocates per call (None if unknown)."""
  mem = _memory_analysis(compiled)
  return None if mem is None else int(getattr(mem, "temp_size_in_bytes", 0))


def xla_peak_bytes(compiled) -> int | None:
  """Bytes one call holds on each device it runs on, by XLA's memory analysis (or None).

  Arguments + outputs + XLA's temporary buffer - donated (aliased) buffers. For a
  sharded program these are one shard's, so the figure is per device. (XLA's own
  `peak_memory_in_bytes` is not used: on CPU it reads below the temporary buffer.)
  """
  mem = _memory_analysis(compiled)
  if mem is None:
    return None
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
             - mem.alias_size_in_bytes)


def mfu(achieved_gflops: float | None, peak_gflops: float | None) -> float | None:
  """Model FLOP utilisation: achieved / peak (None when either is unknown)."""
  if not achieved_gflops or not peak_gflops:
    return None
  return achieved_gflops / peak_gflops


@dataclasses.dataclass(frozen=True)
class Peak:
  """The peak MFU is measured against, and where it comes from."""
  gflops: float | None
  source: str


_matmul = jax.jit(jnp.matmul)  # one jitted function, so repeated measurements compile once


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
  jax.block_until_ready(_matmul(a, b))
  best, t_end = float("inf"), time.perf_counter() + seconds
  calls = 0
  while calls < 3 or time.perf_counter() < t_end:
    t0 = time.perf_counter()
    jax.block_until_ready(_matmul(a, b))
    best = min(best, time.perf_counter() - t0)
    calls += 1
  gflops = 2 * n ** 3 / best / 1e9
  name = jnp.dtype(dtype).name
  return Peak(gflops, f"measured: best of {calls} jitted {n}x{n} @ {n}x{n} {name} matmuls")


def datasheet_peak(device_kind: str, dtype: str, precision: str | None = None) -> Peak | None:
  """The data-sheet peak of one chip for a compute dtype (None for a chip not in the table).

  The peak is that of the unit the dtype runs on under `precision` (JAX's
  `jax_default_matmul_precision`; None is its default): on NVIDIA, float32 matmuls and
  convolutions run as TF32 unless the precision asks for full float32; on TPU every
  dtype is multiplied in bf16 passes, and under the default precision a float32 product
  takes one pass, so it is measured against the bf16 peak (an assumption: a higher
  precision takes three or six passes and would make that MFU look too low).
  """
  for key, table in PEAK_TFLOPS:
    if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", device_kind, re.IGNORECASE):
      break
  else:
    return None
  if "tf32" not in table:  # TPU
    why, column = "", "bfloat16"
    if dtype == "float32":
      why = "float32 products take one bf16 pass under JAX's default precision"
      if precision not in (None, "default", "bfloat16", "fastest"):
        why += f"; jax_default_matmul_precision={precision} takes more, so MFU reads low"
  elif dtype == "float32" and precision not in _FULL_FP32:
    why = "float32 matmuls and convolutions run as TF32 under JAX's default precision"
    column = "tf32"
  else:
    why, column = "", dtype
  if column not in table:
    return None
  name = {"tf32": "TF32", "bfloat16": "bf16", "float32": "fp32"}[column]
  source = f"data sheet, {device_kind}, dense {name}" + (f" ({why})" if why else "")
  return Peak(1e3 * table[column], source)


def peak_gflops(device, dtype: str, *, matmul_seconds: float = 1.5) -> Peak:
  """The peak MFU is measured against: the data sheet for known chips, else a measured matmul."""
  if device.platform != "cpu":
    precision = getattr(jax.config, "jax_default_matmul_precision", None)
    peak = datasheet_peak(device.device_kind, dtype, precision)
    if peak:
      return peak
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


#: What `bench_case` can time: the jitted train step, the forward pass, and a whole
#: epoch as training runs it (`train.train_epoch`, a scan of the step).
PARTS = ("train", "infer", "epoch")
#: `mode` names of more than one part.
MODE_ALIASES = {"both": ("train", "infer"), "all": PARTS}

#: Keys every case's record carries (tests check them).
KEYS = ("impl", "layer", "platform", "device_kind", "num_devices", "devices_used",
        "in_channels", "width", "size", "scale", "batch", "microbatch", "dtype", "mode",
        "params",
        "samples_per_s",
        "steps_per_s", "best_samples_per_s", "timing", "compile_s", "train_flops_per_step",
        "train_gflops_per_s", "xla_flops_per_step", "analytic_over_xla", "xla_temp_bytes",
        "peak_gflops", "peak_source", "mfu", "xla_peak_bytes_per_device",
        "peak_memory_bytes", "peak_memory_source", "peak_memory_bytes_per_device",
        "minor_faults_per_step", "infer_samples_per_s", "infer_compile_s",
        "infer_gflops_per_s", "infer_mfu", "infer_xla_flops", "infer_analytic_over_xla",
        "epoch_pairs", "epoch_steps", "epoch_s", "epoch_samples_per_s", "epoch_compile_s",
        "epoch_gflops_per_s", "epoch_mfu", "epoch_note", "malloc_tune", "malloc_keep",
        "peer_env", "loadavg")


def parse_mode(mode: str) -> tuple[str, ...]:
  """The parts a mode times: one of PARTS, "both", "all", or parts joined by commas."""
  parts = MODE_ALIASES.get(mode) or tuple(p.strip() for p in mode.split(","))
  bad = [p for p in parts if p not in PARTS]
  if bad or not parts:
    raise InputError(f"mode must be one of {PARTS}, {tuple(MODE_ALIASES)} or parts joined by "
                     f"commas, got {mode!r}")
  return tuple(dict.fromkeys(parts))


def impl_name(layer: str, platform: str | None = None, *, in_channels: int, width: float,
              dtype: str = "float32", size: int = PAPER_SIZE, scale: float = PAPER_SCALE) -> str:
  """What `layer` runs as on `platform` for the paper's net of these shape knobs:
  "jax-custom-vjp", "jax-winograd" (the custom VJP with Winograd passes, where at least
  one layer is wide enough for them to win) or "jax-stock-autodiff"."""
  if uses_winograd(layer, platform) and set(
      winograd_forms(in_channels, width, size, scale, DTYPES[dtype])) != {"custom"}:
    return "jax-winograd"
  return "jax-custom-vjp" if uses_custom_vjp(layer, platform) else "jax-stock-autodiff"


def make_state(in_channels: int, width: float, *, dtype: str = "float32", layer: str = "custom",
               seed: int = 0, size: int = PAPER_SIZE, scale: float = PAPER_SCALE) -> TrainState:
  """A fresh paper net and optimiser, its layers differentiated as `layer` says."""
  model = Upsampler(in_channels, width, size=size, scale=scale, dtype=DTYPES[dtype],
                    fast_grad=uses_custom_vjp(layer), winograd=uses_winograd(layer),
                    rngs=nnx.Rngs(seed))
  return TrainState.create(model, make_optimizer())


def make_batch(batch: int, in_channels: int, seed: int = 1, *, size: int = PAPER_SIZE,
               scale: float = PAPER_SCALE) -> dict:
  """A random batch of inputs and targets of the shapes of the net for `size`, `scale`.

  Drawn by NumPy, so no XLA program is compiled for it.
  """
  rng = np.random.default_rng(seed)
  small = layer_sides(size, scale)[0]
  return {"inputs": jnp.asarray(rng.random((batch, small, small, in_channels), np.float32)),
          "targets": jnp.asarray(rng.random((batch, size, size, 3), np.float32))}


def make_dataset(pairs: int, in_channels: int, seed: int = 2, *, size: int = PAPER_SIZE,
                 scale: float = PAPER_SCALE) -> Dataset:
  """`pairs` random training pairs of the net's shapes, as `train.train_epoch` takes them."""
  batch = make_batch(pairs, in_channels, seed, size=size, scale=scale)
  return Dataset(batch["inputs"], batch["targets"],
                 jnp.asarray(np.ones((pairs, size, size), bool)))


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
             seconds: float, env: dict[str, str] | None = None) -> dict:
  """One run of the torch peer (its own process, with `env`, default this process's
  environment); returns its JSON line as a dict."""
  cmd = [python, script, "--in_channels", str(in_channels), "--width", str(width),
         "--batch", str(batch), "--seconds", str(seconds)]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
  return json.loads(out.stdout.strip().splitlines()[-1])


def compile_counted(lowered, devices: int):
  """(compiled program, seconds to compile, XLA's FLOPs over all `devices`): a sharded
  program's cost analysis counts one shard."""
  t0 = time.perf_counter()
  compiled = lowered.compile()
  seconds = time.perf_counter() - t0
  shard_flops = xla_flops(compiled)
  return compiled, seconds, shard_flops * devices if shard_flops else None


def bench_case(in_channels: int, width: float, batch: int, *, dtype: str = "float32",
               mode: str = "both", seconds: float = 6.0, rounds: int = 3,
               data_parallel: bool = False, layer: str = "custom", peak: Peak | None = None,
               epoch_pairs: int = 750, peer_python: str | None = None,
               peer_script: str | None = None, malloc_tune: bool = False,
               size: int = PAPER_SIZE, scale: float = PAPER_SCALE, microbatch: int = 0,
               peer_env: dict[str, str] | None = None) -> dict:
  """Times one configuration; returns the record that is printed as one JSON line.

  `mode` names the parts timed (`parse_mode`); each gets `seconds` (the forward pass
  half of it) in `rounds` rounds. The epoch part runs `train.train_epoch` over
  `epoch_pairs` random pairs, as training does. `size` and `scale` choose the net
  (`model.layer_table`; the seed's 100 and 0.1 by default); `microbatch` the samples
  per gradient chunk (0: `train.resolve_microbatch`'s choice for the backend, as
  training makes it); `peer_env` the peer's environment (default this process's). With
  `data_parallel`, FLOPs, rates and the peak count every device used: XLA's cost
  analysis of a sharded program is per shard, so it is multiplied by the devices, and
  MFU is measured against the peak of all of them.
  """
  parts = parse_mode(mode)
  steps = num_batches(epoch_pairs, batch) if "epoch" in parts else None
  dev = jax.devices()[0]
  microbatch = net_microbatch(microbatch, batch, in_channels, width, size, scale,
                              dev.platform)
  mesh = data_mesh() if data_parallel else None
  devices = mesh.shape["data"] if mesh is not None else 1
  state = make_state(in_channels, width, dtype=dtype, layer=layer, size=size, scale=scale)
  data = make_batch(batch, in_channels, size=size, scale=scale)
  if mesh is not None:
    state, data = shard_for_data_parallel(state, data, mesh)
  params = sum(int(p.size) for p in jax.tree.leaves(state.params))
  peak = peak or peak_gflops(dev, dtype)
  all_peak = peak.gflops * devices if peak.gflops else None
  fwd_flops = flops_per_sample(in_channels, width, size, scale) * batch
  train_flops = train_flops_per_sample(in_channels, width, size, scale) * batch
  per_round = seconds / rounds
  rec = {k: None for k in KEYS}
  rec.update(
      impl=impl_name(layer, dev.platform, in_channels=in_channels, width=width, dtype=dtype,
                     size=size, scale=scale), layer=layer,
      platform=dev.platform, device_kind=dev.device_kind, num_devices=jax.device_count(),
      devices_used=devices, in_channels=in_channels, width=width, size=size, scale=scale,
      batch=batch, microbatch=microbatch, dtype=dtype,
      mode=",".join(parts), params=params, train_flops_per_step=train_flops,
      timing=f"median of {rounds} rounds of {per_round:.3g} s after warm-up calls (fewer "
             "rounds, of one call, where a call takes longer); every call waited for",
      peak_gflops=peak.gflops, peak_source=peak.source + (f", x {devices} devices"
                                                          if devices > 1 else ""),
      malloc_tune=malloc_tune, malloc_keep=freed_memory_kept(), loadavg=os.getloadavg()[0],
      # What the peer's environment sets beyond this process's (None: the same).
      peer_env=None if peer_env is None or not peer_python else
      {k: v for k, v in peer_env.items() if os.environ.get(k) != v})
  programs = []  # every compiled program, for the case's memory peak

  if "infer" in parts:
    forward = jax.jit(_forward, static_argnums=0)
    fc, rec["infer_compile_s"], rec["infer_xla_flops"] = compile_counted(
        forward.lower(state.graphdef, state.params, data["inputs"]), devices)
    programs.append(fc)
    if rec["infer_xla_flops"]:
      rec["infer_analytic_over_xla"] = fwd_flops / rec["infer_xla_flops"]
    t = time_calls(lambda: fc(state.params, data["inputs"]), seconds=seconds / 2, rounds=rounds)
    rec["infer_samples_per_s"] = t.median * batch
    rec["infer_gflops_per_s"] = t.median * fwd_flops / 1e9
    rec["infer_mfu"] = mfu(rec["infer_gflops_per_s"], all_peak)

  box = [state]  # the live state: every update donates the one before
  if "train" in parts:
    compiled, rec["compile_s"], rec["xla_flops_per_step"] = compile_counted(
        train_step.lower(state, data, microbatch=microbatch), devices)
    programs.append(compiled)
    if rec["xla_flops_per_step"]:
      # XLA's cost analysis counts a scan's body once: the chunked gradient's loop runs
      # it batch / microbatch times (the Adam update, counted as often, is ~0.1%).
      rec["xla_flops_per_step"] *= batch // microbatch
      rec["analytic_over_xla"] = train_flops / rec["xla_flops_per_step"]
    rec["xla_temp_bytes"] = xla_temp_bytes(compiled)

    def step():
      box[0], metrics = compiled(box[0], data)
      return metrics["loss"]

    jax.block_until_ready(step())
    t0 = time.perf_counter()
    jax.block_until_ready(step())
    rates, peer_rates, ratios = [], [], []
    faults0, calls = _minor_faults(), 0
    for _ in range(_rounds_that_fit(time.perf_counter() - t0, seconds, rounds)):
      t = time_calls(step, seconds=per_round, rounds=1, warmup=0)
      rates.append(t.median)
      calls += t.calls
      if peer_python:
        faults_before_peer = _minor_faults()
        peer = run_peer(peer_python, peer_script, in_channels, width, batch, per_round,
                        peer_env)
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
      rec["ratio_vs_peer_quartiles"] = (statistics.quantiles(ratios, n=4)[::2]
                                        if len(ratios) > 1 else ratios * 2)

  if "epoch" in parts:
    if mesh is not None:
      rec["epoch_note"] = "not timed: train_epoch runs on one device (no data_parallel)"
    elif rec["steps_per_s"] and steps / rec["steps_per_s"] > seconds:
      # A warm-up epoch and a timed one would take more than twice the part's seconds.
      rec["epoch_note"] = (f"not timed: an epoch of {steps} steps would take about "
                           f"{steps / rec['steps_per_s']:.0f} s at the step's rate")
    else:
      programs.append(_time_epoch(box, rec, epoch_pairs, seconds=seconds, rounds=rounds,
                                  train_flops=train_flops, peak=all_peak))

  rec["xla_peak_bytes_per_device"] = max((xla_peak_bytes(c) or 0 for c in programs),
                                         default=0) or None
  mem, src = peak_memory(dev)
  rec["peak_memory_bytes"], rec["peak_memory_source"] = mem, src
  if mesh is not None or dev.platform != "cpu":
    rec["peak_memory_bytes_per_device"] = [peak_memory(d)[0] for d in
                                           (mesh.devices.flat if mesh is not None else [dev])]
  return rec


def _rounds_that_fit(call_s: float, seconds: float, rounds: int) -> int:
  """How many of `rounds` rounds of at least one `call_s` call fit in `seconds` (>= 1)."""
  return max(1, min(rounds, int(seconds / call_s))) if call_s > 0 else rounds


def _time_epoch(box: list, rec: dict, pairs: int, *, seconds: float, rounds: int,
                train_flops: float, peak: float | None):
  """The compiled epoch, after timing whole epochs of it into rec's epoch_* keys.

  The epochs start from, and leave their state in, `box`.
  """
  batch = rec["batch"]
  steps = num_batches(pairs, batch)
  data = make_dataset(pairs, rec["in_channels"], size=rec["size"], scale=rec["scale"])
  key = jax.random.PRNGKey(3)
  compiled, rec["epoch_compile_s"], _ = compile_counted(
      train_epoch.lower(box[0], data, key, batch_size=batch, microbatch=rec["microbatch"]), 1)

  def epoch():
    box[0], metrics = compiled(box[0], data, key)
    return metrics["loss"]

  t0 = time.perf_counter()
  jax.block_until_ready(epoch())  # the warm-up call, timed to size the rounds
  rounds = _rounds_that_fit(time.perf_counter() - t0, seconds, rounds)
  t = time_calls(epoch, seconds=seconds, rounds=rounds, warmup=0)
  rec.update(epoch_pairs=pairs, epoch_steps=steps, epoch_s=1 / t.median,
             epoch_samples_per_s=t.median * steps * batch,
             epoch_gflops_per_s=t.median * steps * train_flops / 1e9)
  rec["epoch_mfu"] = mfu(rec["epoch_gflops_per_s"], peak)
  return compiled


def bench_population(case: "Case", nets: int, *, batch: int = 50, epoch_pairs: int = 750,
                     seconds: float = 6.0, rounds: int = 3, peak: Peak | None = None) -> dict:
  """Throughput of `nets` nets of `case` trained together as `fit.fit_population` trains
  them: the sharded, vmapped block of one epoch (`epoch_pairs` training pairs and a
  third as many validation pairs per net, the seed's 3:1 split), on every device.

  Rates and FLOPs count every net; MFU is over the peak of all devices used. Nets that
  do not fill the devices are padded as `fit_population` pads them, and the padding
  counts as work done (it is, on the chip).
  """
  from singleseg_jax import fit as fit_lib  # noqa: PLC0415 (fit imports nothing of this)

  n_val = max(1, epoch_pairs // 3)
  options = FitOptions(in_channels=case.in_channels, width=case.width, layer=case.layer,
                       dtype=case.dtype, batch_size=batch, num_samples=epoch_pairs + n_val,
                       train_fraction=epoch_pairs / (epoch_pairs + n_val), epochs_per_sync=1)
  n_train = num_train(options.num_samples, options.train_fraction)
  mesh = fit_lib.population_mesh()
  devices = mesh.devices.size
  image = np.random.default_rng(4).integers(0, 256, (PAPER_SIZE, PAPER_SIZE, 3), np.uint8)
  keys = [jax.random.key(i) for i in range(nets)]
  fns = fit_lib.population_functions(options, mesh)
  kd, im = fit_lib.population_inputs(keys, image, mesh)
  ts, train, val, rule = fns.init(kd, im)
  start, one = (fit_lib.global_array(mesh, P(), np.int32(n)) for n in (0, 1))
  compiled, compile_s, _ = compile_counted(
      fns.block.lower(ts, train, val, kd, im, rule, start, one), devices)
  box = [ts, rule]

  def epoch():  # the nets and their rules are donated: carry the new ones on
    box[0], box[1], metrics = compiled(box[0], train, val, kd, im, box[1], start, one)
    return metrics

  t0 = time.perf_counter()
  jax.block_until_ready(epoch())
  rounds = _rounds_that_fit(time.perf_counter() - t0, seconds, rounds)
  t = time_calls(epoch, seconds=seconds, rounds=rounds, warmup=0)
  total = kd.shape[0]
  flops = total * (n_train * train_flops_per_sample(case.in_channels, case.width)
                   + n_val * flops_per_sample(case.in_channels, case.width))
  peak = peak or peak_gflops(jax.devices()[0], case.dtype)
  rec = {"case": case.name, "net": case.net, "layer": case.layer,
         "impl": impl_name(case.layer, in_channels=case.in_channels, width=case.width,
                           dtype=case.dtype), "dtype": case.dtype, "nets": nets,
         "nets_computed": total, "devices_used": devices, "batch": batch,
         "microbatch": options.resolved_microbatch(), "malloc_keep": freed_memory_kept(),
         "epoch_pairs": n_train, "val_pairs": n_val, "compile_s": compile_s,
         "epoch_s": 1 / t.median, "samples_per_s": t.median * total * n_train,
         "gflops_per_s": t.median * flops / 1e9,
         "peak_gflops": peak.gflops * devices if peak.gflops else None,
         "peak_source": peak.source, "xla_peak_bytes_per_device": xla_peak_bytes(compiled),
         "timing": f"median of {rounds} rounds of {seconds / rounds:.3g} s after one warm-up "
                   "epoch; every epoch waited for"}
  rec["mfu"] = mfu(rec["gflops_per_s"], rec["peak_gflops"])
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


def _numbers(values: Sequence[str], kind: type, name: str) -> list:
  try:
    out = [kind(v) for v in values]
  except ValueError:
    raise InputError(f"{name} must be {kind.__name__}s, got {','.join(values)!r}") from None
  if not out or min(out) <= 0:
    raise InputError(f"{name} must be positive, got {','.join(values)!r}")
  return out


def parse_sizes(values: Sequence[str]) -> tuple[int, ...]:
  """Population sizes from flag strings; InputError unless all are positive integers."""
  return tuple(_numbers(values, int, "--suite_population_sizes"))


def benchmark(in_channels: int, width: float, batch: int, *, seconds: float = 6.0,
              rounds: int = 3, dtype: str = "float32", mode: str = "both",
              peer_python: str | None = None, peer_script: str | None = None,
              sweep_batches: Sequence[str] | None = None, sweep_widths: Sequence[str] = (),
              out: str = "", peak_seconds: float = 1.5, size: int = PAPER_SIZE,
              scale: float = PAPER_SCALE,
              on_case: Callable[[dict], None] = lambda rec: None, **kw) -> list[dict]:
  """The records of the benchmark main's cases: one `bench_case`, or a `sweep`.

  With `sweep_batches`, the sweep over them and `sweep_widths` (strings, as flags give
  them) into `out`. The peak is measured once, every argument checked first.
  """
  if not seconds > 0 or rounds < 1:
    raise InputError("--seconds must be > 0 and --rounds >= 1")
  if peer_python and not peer_script:
    raise InputError("--peer_python needs --peer_script (the torch peer's path)")
  layer_sides(size, scale)  # validates the pair
  if peer_python and (size, scale) != (PAPER_SIZE, PAPER_SCALE):
    raise InputError(f"the torch peer builds the seed's net only: --size={PAPER_SIZE} "
                     f"--scale={PAPER_SCALE:g}")
  parse_mode(mode)
  if sweep_batches is not None:
    batches = _numbers(sweep_batches, int, "--sweep_batches")
    widths = _numbers(sweep_widths, float, "--sweep_widths")
  for b in batches if sweep_batches is not None else [batch]:
    check_microbatch(kw.get("microbatch", 0), b)
  peak = peak_gflops(jax.devices()[0], dtype, matmul_seconds=peak_seconds)
  kw.update(dtype=dtype, mode=mode, seconds=seconds, rounds=rounds, peak=peak,
            peer_python=peer_python, peer_script=peer_script, size=size, scale=scale)
  if sweep_batches is not None:
    return sweep(batches, widths, out, on_case=on_case, **kw)
  rec = bench_case(in_channels, width, batch, **kw)
  on_case(rec)
  return [rec]


#: The forms `time_layer_forms` compares on a stride-1 layer: the tap-GEMM custom VJP
#: and Winograd F(2x2,3x3) and F(4x4,3x3).
LAYER_FORMS = ("custom", "f2", "f4")


def _layer_pass(stride: int, crop, activation: str, form: str, wrt_input: bool):
  """A jitted forward + backward of one layer as `form` runs it: the gradients
  wrt the kernel, the bias and (if `wrt_input`) the input of sum(layer(x) * cot)."""
  if form == "custom":
    fn = lambda x, k, b: layers.conv_transpose(x, k, b, stride, crop, activation)
  else:
    fn = lambda x, k, b: layers.conv_transpose_winograd(x, k, b, crop, activation,
                                                       winograd.tile_of(form))
  argnums = (0, 1, 2) if wrt_input else (1, 2)
  return jax.jit(jax.grad(lambda x, k, b, cot: jnp.sum(fn(x, k, b) * cot), argnums))


def time_layer_forms(in_channels: int = 256, width: float = 1.0, batch: int = 50, *,
                     seconds: float = 4.0, rounds: int = 5,
                     forms: Sequence[str] = LAYER_FORMS, microbatch: int = 0) -> list[dict]:
  """Forward + backward time of each layer of the net: the stride-1 layers in each of
  `forms`, the strided ones as the custom VJP (their only form).

  Each call takes `microbatch` samples (0: the whole `batch`), and `ms` is per `batch`
  samples (the call's time x batch / microbatch), so runs at different chunk sizes
  compare as the train step's chunks do (`train.batch_value_and_grad`). The forms are
  timed in paired alternating rounds (round r of every form back to back), so a load
  change on the machine hits them alike; `speedup` is the median over rounds of
  custom's time over the form's. Layer 1 takes no input gradient, as in the train step.
  GFLOP/s are by the analytic count, 3x the layer's forward (2x for layer 1): a form
  with fewer multiplications can exceed the matmul peak.
  """
  if not seconds > 0 or rounds < 1:
    raise InputError("--seconds must be > 0 and --rounds >= 1")
  chunk = check_microbatch(microbatch, batch) or batch  # 0: the whole batch, not auto
  sides, widths = layer_sides(), layer_widths(width)
  records, cin = [], in_channels
  rng = np.random.default_rng(0)
  for i, ((_, stride, crop), cout) in enumerate(zip(LAYERS, widths)):
    side, c_in = sides[i], cin
    cin = cout
    layer_forms = list(forms) if stride == 1 else ["custom"]
    x = jnp.asarray(rng.random((chunk, side, side, c_in), np.float32))
    k = jnp.asarray(rng.normal(0, 0.05, (3, 3, c_in, cout)).astype(np.float32))
    b = jnp.zeros((cout,), jnp.float32)
    cot = jnp.asarray(rng.normal(size=(chunk, sides[i + 1], sides[i + 1], cout))
                      .astype(np.float32))
    passes = 2 if i == 0 else 3
    flops = passes * 2 * batch * side * side * c_in * cout * 9
    activation = "sigmoid" if i == len(LAYERS) - 1 else "relu"
    calls = {f: _layer_pass(stride, crop, activation, f, i > 0) for f in layer_forms}
    for f in layer_forms:  # compile and warm up
      for _ in range(2):
        jax.block_until_ready(calls[f](x, k, b, cot))
    times = {f: [] for f in layer_forms}
    for _ in range(rounds):
      for f in layer_forms:
        t = time_calls(lambda: calls[f](x, k, b, cot),
                       seconds=seconds / rounds / len(layer_forms), rounds=1, warmup=0)
        times[f].append(1e3 / t.median * batch / chunk)
    for f in layer_forms:
      ms = statistics.median(times[f])
      records.append({
          "layer": i + 1, "stride": stride, "side": side, "in_channels": c_in,
          "out_channels": cout, "batch": batch, "microbatch": chunk, "form": f, "ms": ms,
          "rounds_ms": times[f], "gflops_per_s": flops / ms / 1e6,
          "speedup": statistics.median(c / t for c, t in zip(times["custom"], times[f]))
          if "custom" in times else None, "malloc_keep": freed_memory_kept()})
  return records


def parse_step(spec: str, batch: int, in_channels: int = 256,
               width: float = 1.0) -> tuple[str, int]:
  """(layer, microbatch) of a `compare_layers` spec "layer" or "layer:microbatch" (the
  samples per gradient chunk; without it, or 0, the backend's choice)."""
  layer, _, chunk = spec.partition(":")
  try:
    microbatch = int(chunk) if chunk else 0
  except ValueError:
    raise InputError(f"a step is layer or layer:microbatch (e.g. winograd:10), got "
                     f"{spec!r}") from None
  return layers.check_layer(layer), net_microbatch(microbatch, batch, in_channels, width)


def compare_layers(specs: Sequence[str], in_channels: int = 256, width: float = 1.0,
                   batch: int = 50, *, seconds: float = 48.0, rounds: int = 16) -> dict:
  """The train step as each of `specs` ("layer" or "layer:microbatch", `parse_step`) runs
  it, in paired alternating rounds in this one process: samples/s per round, and the
  median and quartiles over rounds of each one's rate over the first's."""
  specs_ = list(dict.fromkeys(specs))
  if len(specs_) < 2 or len(specs_) < len(specs) or not seconds > 0 or rounds < 1:
    raise InputError("compare two or more different steps, with --seconds > 0 and "
                     "--rounds >= 1")
  parsed = {spec: parse_step(spec, batch, in_channels, width) for spec in specs_}
  data = make_batch(batch, in_channels)
  steps = {}
  for layer, (name, microbatch) in parsed.items():
    box = [make_state(in_channels, width, layer=name)]
    compiled = train_step.lower(box[0], data, microbatch=microbatch).compile()

    def step(compiled=compiled, box=box):
      box[0], metrics = compiled(box[0], data)
      return metrics["loss"]
    for _ in range(2):
      jax.block_until_ready(step())
    steps[layer] = step
  rates = {layer: [] for layer in specs_}
  for _ in range(rounds):
    for layer, step in steps.items():
      t = time_calls(step, seconds=seconds / rounds / len(specs_), rounds=1, warmup=0)
      rates[layer].append(t.median * batch)
  rec = {"in_channels": in_channels, "width": width, "batch": batch, "rounds": rounds,
         "microbatch": {spec: m for spec, (_, m) in parsed.items()},
         "rounds_samples_per_s": rates, "malloc_keep": freed_memory_kept(),
         "loadavg": os.getloadavg()[0]}
  base = rates[specs_[0]]
  for layer in specs_[1:]:
    ratios = [r / b for r, b in zip(rates[layer], base)]
    rec[f"{layer}_over_{specs_[0]}"] = statistics.median(ratios)
    rec[f"{layer}_over_{specs_[0]}_quartiles"] = (statistics.quantiles(ratios, n=4)[::2]
                                                  if len(ratios) > 1 else ratios * 2)
  return rec


@dataclasses.dataclass(frozen=True)
class Case:
  """One row of the accelerator table: a net, how its layers are differentiated, a dtype."""
  in_channels: int
  width: float
  layer: str
  dtype: str

  def __post_init__(self):
    FitOptions(in_channels=self.in_channels, width=self.width, layer=self.layer,
               dtype=self.dtype)  # validates all four as a config's would be

  @property
  def net(self) -> str:
    """The net's name in the tables: cat, car, or its in_channels and width."""
    names = {(256, 1.0): "cat", (512, 2.0): "car"}
    return names.get((self.in_channels, self.width),
                     f"C={self.in_channels} w{self.width:g}")

  @property
  def name(self) -> str:
    """`net layer dtype`, as progress lines and skip notes call the case."""
    return f"{self.net} {self.layer} {self.dtype}"

  @property
  def spec(self) -> str:
    """The case as `parse_cases` reads it: in_channels:width:layer:dtype."""
    return f"{self.in_channels}:{self.width:g}:{self.layer}:{self.dtype}"


#: The accelerator table: the cat/dog net (C=256, width 1) and the car net (C=512,
#: width 2), each with both layers and both dtypes; the cat net first, so a tight
#: budget drops the car net's cases.
ACCELERATOR_CASES = tuple(Case(c, w, layer, dtype) for c, w in ((256, 1.0), (512, 2.0))
                          for layer in ("custom", "stock") for dtype in ("float32", "bfloat16"))
#: Shares of the suite's budget for its table of cases and for the population table,
#: each split evenly between its entries; the cat run gets the rest, plus whatever the
#: tables leave.
CASES_SHARE = 0.3
POPULATION_SHARE = 0.35
#: Population sizes of the population table (nets trained together, `bench_population`).
POPULATION_SIZES = (1, 8, 32, 128)
#: The population table's nets, with the layer training picks (`auto`): bfloat16 and the
#: car net first, the case the throughput goal is about, so a tight budget drops others.
POPULATION_CASES = tuple(Case(c, w, "auto", dtype) for dtype in ("bfloat16", "float32")
                         for c, w in ((512, 2.0), (256, 1.0)))
#: Share of a case's slot timed for each of its two parts (the train step and the
#: epoch); the rest of the slot is for compiling and warm-up calls.
TIMED_SHARE = 0.25
#: Epochs of the cat run's first stage, whose seconds per epoch size the next stage.
PROBE_EPOCHS = 5


def parse_cases(specs: Sequence[str]) -> tuple[Case, ...]:
  """Cases from "in_channels:width:layer:dtype" strings; InputError for a malformed one."""
  cases = []
  for spec in specs:
    fields = spec.split(":")
    try:
      if len(fields) != 4:
        raise ValueError
      c, w = int(fields[0]), float(fields[1])
    except ValueError:
      raise InputError(f"a case is in_channels:width:layer:dtype (e.g. "
                       f"{ACCELERATOR_CASES[0].spec}), got {spec!r}") from None
    cases.append(Case(c, w, fields[2], fields[3]))
  return tuple(cases)


def accelerator_suite(out: str, config, *, cases: Sequence[Case] = ACCELERATOR_CASES,
                      populations: Sequence[Case] = POPULATION_CASES,
                      population_sizes: Sequence[int] = POPULATION_SIZES,
                      batch: int = 50, seconds: float = 480.0,
                      case_seconds: float | None = None, rounds: int = 3,
                      epoch_pairs: int = 750, peak_seconds: float = 1.5) -> dict:
  """The accelerator check's result, also written to out/accelerator.json and .md.

  It times `cases`, then `populations` at each of `population_sizes`, and fits
  `config`'s run within about `seconds`. Each case times the train step and an epoch of
  `epoch_pairs` pairs (`bench_case`) on one device, for `case_seconds` each (default:
  TIMED_SHARE of its slot, the cases sharing CASES_SHARE of the budget); each
  population entry times epochs of that many nets together on all devices
  (`bench_population`, sharing POPULATION_SHARE). An entry that would not fit in what
  is left of its share is skipped, and one that fails (say, out of memory) is not
  retried, nor are the larger populations of its case; all are listed with the
  reason. Then `config`'s run is fitted from scratch
  (`run.train_and_evaluate`) in a temporary folder, for up to `config.num_epochs`
  epochs (`_cat_run`). Everything is checked before anything is timed.
  """
  if not seconds > 0 or (case_seconds is not None and not case_seconds > 0) or rounds < 1:
    raise InputError("the suite's seconds and case seconds must be > 0 and rounds >= 1")
  t_start = time.perf_counter()
  cases = tuple(cases)
  if not cases:
    raise InputError("the suite needs at least one case")
  populations, population_sizes = tuple(populations), tuple(population_sizes)
  if any(not isinstance(n, int) or n < 1 for n in population_sizes):
    raise InputError(f"population sizes must be positive integers, got {population_sizes}")
  num_batches(epoch_pairs, batch)
  run_lib.prepare(config)  # the image exists and reads
  options = run_lib.fit_options(config)
  os.makedirs(out, exist_ok=True)
  deadline = t_start + seconds
  dev = jax.devices()[0]
  peaks, skipped = {}, []

  def peak_of(dtype, slot):
    if dtype not in peaks:
      peaks[dtype] = peak_gflops(dev, dtype, matmul_seconds=min(peak_seconds, 0.1 * slot))
    return peaks[dtype]

  def case_entry(case, timed, slot):
    rec = bench_case(case.in_channels, case.width, batch, dtype=case.dtype, layer=case.layer,
                     mode="train,epoch", seconds=timed, rounds=rounds,
                     peak=peak_of(case.dtype, slot), epoch_pairs=epoch_pairs)
    rec.update(case=case.name, net=case.net)
    return rec, (f"step {rec['samples_per_s']:.0f} samples/s (MFU {_percent(rec['mfu'])}), "
                 f"epoch {rec['epoch_samples_per_s']:.0f} samples/s "
                 f"(MFU {_percent(rec['epoch_mfu'])})")

  def population_entry(entry, timed, slot):
    case, nets = entry
    rec = bench_population(case, nets, batch=batch, epoch_pairs=epoch_pairs, seconds=timed,
                           rounds=rounds, peak=peak_of(case.dtype, slot))
    return rec, (f"{rec['samples_per_s']:.0f} samples/s over {nets} nets "
                 f"(MFU {_percent(rec['mfu'])})")

  timed = case_seconds or TIMED_SHARE * CASES_SHARE * seconds / len(cases)
  records = _timed_entries(cases, t_start, CASES_SHARE * seconds, timed, case_entry, skipped,
                           name=lambda c: c.name, group=lambda c: c.net,
                           chain=lambda c: c.name, what="cases")
  pop_entries = [(c, n) for c in populations for n in population_sizes]
  pop_timed = case_seconds or TIMED_SHARE * POPULATION_SHARE * seconds / max(len(pop_entries), 1)
  # The populations' time ends a fixed share after the cases' end: what the cases left
  # goes to them, what the cases overran is taken from them.
  pop_records = _timed_entries(pop_entries, t_start + CASES_SHARE * seconds,
                               POPULATION_SHARE * seconds, pop_timed,
                               population_entry, skipped,
                               name=lambda e: f"{e[0].name} x{e[1]} nets",
                               group=lambda e: e[0].name, chain=lambda e: e[0].name,
                               what="populations")
  try:
    cat = _cat_run(config, options, out, deadline, records)
  except Exception as e:  # the table is still worth writing
    cat = {"image": config.image, "skipped": f"failed: {_one_line(e)}"}
    logging.info("cat run %s", cat["skipped"])
  result = {
      "platform": dev.platform, "device_kind": dev.device_kind,
      "num_devices": jax.device_count(), "jax": jax.__version__, "budget_s": seconds,
      "elapsed_s": time.perf_counter() - t_start, "batch": batch, "epoch_pairs": epoch_pairs,
      "timed_s_per_part": timed, "population_timed_s": pop_timed, "rounds": rounds,
      "peaks": {d: dataclasses.asdict(p) for d, p in peaks.items()},
      "cases": records, "populations": pop_records, "skipped": skipped, "cat_run": cat}
  tables.atomic_write(os.path.join(out, "accelerator.json"), json.dumps(result, indent=2))
  tables.atomic_write(os.path.join(out, "accelerator.md"), accelerator_markdown(result))
  return result


def _timed_entries(entries, begin: float, share: float, timed: float, run_one, skipped: list,
                   *, name, group, chain, what: str) -> list[dict]:
  """Runs `run_one(entry, timed seconds, slot) -> (record, summary)` for each entry that
  fits before `begin + share` (perf_counter seconds), the others added to `skipped`;
  returns the records.

  An entry's need is the last time of its `group` (a group not timed yet: at least
  twice its timed seconds, and no less than the longest entry so far); after a failure
  the rest of its `chain` is skipped (a larger population of a net that ran out of
  memory would run out too)."""
  entries = list(entries)
  if not entries:
    return []
  end, slot = begin + share, share / len(entries)
  records, last, failed = [], {}, {}
  progress = Progress(len(entries))
  for i, entry in enumerate(entries):
    g, c = group(entry), chain(entry)
    need = last.get(g, max([2 * timed] + list(last.values())))
    left = end - time.perf_counter()
    progress.update(i + 1)
    if c in failed:
      reason = f"skipped: {failed[c]} failed"
    elif need > left:
      reason = (f"skipped: needs about {need:.0f} s, {max(left, 0):.0f} s left of the "
                f"{what}' {share:.0f} s")
    else:
      t0 = time.perf_counter()
      try:
        rec, summary = run_one(entry, timed, slot)
      except Exception as e:  # one broken entry must not cost the others their time
        failed[c] = name(entry)
        reason = f"failed: {_one_line(e)}"
      else:
        rec["case_s"] = last[g] = time.perf_counter() - t0
        records.append(rec)
        logging.info("%s %d/%d %s: %s, %.1f s; %s", what, i + 1, len(entries), name(entry),
                     summary, rec["case_s"], progress)
        continue
    skipped.append({"case": name(entry), "reason": reason})
    logging.info("%s %d/%d %s %s", what, i + 1, len(entries), name(entry), reason)
  return records


def _one_line(e: Exception) -> str:
  return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


def _percent(x: float | None) -> str:
  return "–" if x is None else f"{100 * x:.1f}%"


def _cat_run(config, options, out: str, deadline: float, records: list[dict]) -> dict:
  """A summary of `config`'s run, fitted from scratch in stages that end before `deadline`.

  Its metrics and loss curve are copied into `out`.

  The first stage runs PROBE_EPOCHS epochs; each next one as many more as fit in what is
  left at the last stage's seconds per epoch (after its first, compiling, epoch), less
  its overhead. A stage resumes the last one's checkpoint, and a resumed run equals an
  uninterrupted one (`run`), so only the wall time carries the stages' extra start-ups.
  """
  summary = {"image": config.image, "max_epochs": config.num_epochs, "layer": options.layer,
             "impl": impl_name(options.layer, in_channels=options.in_channels,
                               width=options.width, dtype=options.dtype, size=options.size,
                               scale=options.scale), "in_channels": options.in_channels,
             "width": options.width, "dtype": options.dtype, "batch": options.batch_size}
  impl = summary["impl"]
  n_train = num_train(options.num_samples, options.train_fraction)
  timed = [r["epoch_s"] * n_train / r["epoch_pairs"] for r in records
           if r["epoch_s"] and (r["in_channels"], r["width"], r["dtype"], r["impl"], r["batch"])
           == (options.in_channels, options.width, options.dtype, impl, options.batch_size)]
  left = deadline - time.perf_counter()
  if left <= 0 or (timed and 2 * timed[0] > left):
    summary["skipped"] = f"skipped: {max(left, 0):.0f} s left of the budget"
    logging.info("cat run %s", summary["skipped"])
    return summary
  stages, done, t0, note = [], 0, time.perf_counter(), None
  target = min(config.num_epochs, PROBE_EPOCHS)
  with tempfile.TemporaryDirectory(prefix="cat_run_") as workdir:
    while True:
      stage = config.copy_and_resolve_references()
      stage.num_epochs = target
      t_stage = time.perf_counter()
      info = run_lib.train_and_evaluate(stage, workdir)
      wall = time.perf_counter() - t_stage
      with open(os.path.join(workdir, "metrics.jsonl")) as f:
        epoch_s = [r["seconds"] for r in map(json.loads, f) if r["epoch"] > done]
      per_epoch = max(statistics.median(epoch_s[1:] or epoch_s), 1e-3)  # logged to the ms
      overhead = max(wall - per_epoch * len(epoch_s), 0.0)
      done = info["epochs"]
      stages.append({"epochs": done, "wall_s": wall, "seconds_per_epoch": per_epoch})
      left = deadline - time.perf_counter()
      logging.info("cat run: %d/%d epochs after stage %d, %.3f s/epoch, %.0f s of the budget "
                   "left", done, config.num_epochs, len(stages), per_epoch, left)
      if not info["stopped"].startswith("reached") or done >= config.num_epochs:
        break
      target = min(config.num_epochs, done + int(0.9 * (left - overhead) / per_epoch))
      if target <= done:
        note = (f"stopped by the budget at epoch {done} of {config.num_epochs} "
                f"({left:.0f} s left, {overhead:.0f} s of overhead per stage)")
        break
    for name in ("metrics.jsonl", "loss_curve.png"):
      shutil.copy(os.path.join(workdir, name), os.path.join(out, "cat_" + name))
  summary.update(epochs=done, stopped=note or info["stopped"],
                 wall_s=time.perf_counter() - t0, stages=stages,
                 best_epoch=info["best_epoch"], best_val_loss=info["best_val_loss"])
  return summary


def accelerator_markdown(result: dict) -> str:
  """The suite's result as markdown: device, table of cases, what was skipped, cat run."""
  mib = lambda b: "–" if not b else f"{b / 2 ** 20:.0f}"
  rows = [(r["net"], r["layer"] + (f" ({r['impl'].split('-')[1]})" if r["layer"] == "auto"
                                   else ""), r["dtype"],
           f"{r['samples_per_s']:.0f}", _percent(r["mfu"]), f"{r['epoch_samples_per_s']:.0f}",
           _percent(r["epoch_mfu"]), f"{r['compile_s']:.1f} + {r['epoch_compile_s']:.1f}",
           mib(r["xla_peak_bytes_per_device"]), mib(max(r["peak_memory_bytes_per_device"] or
                                                        [r["peak_memory_bytes"]])))
          for r in result["cases"]]
  lines = [f"{result['device_kind']} ({result['platform']}, {result['num_devices']} "
           f"device(s), each case on one), jax {result['jax']}, batch {result['batch']}, "
           f"epochs of {result['epoch_pairs']} pairs; {result['elapsed_s']:.0f} s of a "
           f"{result['budget_s']:.0f} s budget.", ""]
  lines += tables.markdown_table(
      ("net", "layer", "dtype", "step samples/s", "step MFU", "epoch samples/s", "epoch MFU",
       "compile s (step + epoch)", "MiB per device (XLA)", "peak MiB so far"), rows)
  lines.append("")
  pops = result.get("populations") or []
  if pops:
    single = {r["case"]: r["samples_per_s"] / r["nets_computed"] for r in pops if r["nets"] == 1}
    lines += tables.markdown_table(
        ("net", "layer", "dtype", "nets", "samples/s (all nets)", "x one net", "MFU",
         "compile s", "MiB per device (XLA)"),
        [(r["net"], f"{r['layer']} ({r['impl'].split('-')[1]})", r["dtype"], str(r["nets"]),
          f"{r['samples_per_s']:.0f}",
          f"{r['samples_per_s'] / single[r['case']]:.1f}" if r["case"] in single else "–",
          _percent(r["mfu"]), f"{r['compile_s']:.1f}", mib(r["xla_peak_bytes_per_device"]))
         for r in pops])
    lines.append("")
  lines += [f"- {s['case']}: {s['reason']}" for s in result["skipped"]]
  lines += [f"- MFU against {d}: {p['source']}" for d, p in result["peaks"].items()]
  cat = result["cat_run"]
  if "skipped" in cat:
    lines.append(f"- cat run ({cat['image']}): {cat['skipped']}")
  else:
    lines.append(f"- cat run ({cat['image']}, layer {cat['layer']} = {cat['impl']}, "
                 f"{cat['dtype']}): {cat['epochs']} epochs in {cat['wall_s']:.0f} s wall "
                 f"({len(cat['stages'])} stage(s), {cat['stages'][-1]['seconds_per_epoch']:.3f} "
                 f"s/epoch), {cat['stopped']}; best val loss {cat['best_val_loss']:.4g} at "
                 f"epoch {cat['best_epoch']}")
  return "\n".join(lines) + "\n"
