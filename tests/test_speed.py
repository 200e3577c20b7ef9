"""The benchmark's arithmetic and plumbing (no timing assertions; tiny nets only).

What XLA's cost analysis counts (measured, jax 0.10 CPU): for the transposed
convolution written as an lhs-dilated convolution it counts exactly the real
multiply-adds, 2 * H * W * Cin * Cout * 9 per sample, skipping the dilation holes and the
padding, when nothing is cropped and there is no bias. With MATLAB's crop it counts
fewer (the taps landing in the cropped border: up to 11% less for the stride-2 crop
(1,1,1,1) on a 12x12 map), and it adds the bias and activation element-wise ops. For
the whole forward pass this puts analytic/XLA between 0.99 (tiny nets, where the
element-wise ops weigh) and 1.03 (the paper's net), hence the 5% tolerance. The count is
checked on that convolution (the layer without its custom VJP): the custom VJP's
tap-sum forward is one GEMM over all nine taps, cropped ones included, plus the adds of
the nine planes, which XLA counts as flops too (they weigh most in the tiny net, whose
8 input channels make few multiply-adds per add).
"""
import csv
import json
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from flax import nnx

import singleseg_jax as ss
from singleseg_jax import memory
from singleseg_jax import speed as bm
from singleseg_jax.paper.layers import conv_transpose_reference
from experiments import benchmark
from helpers import ROOT

TINY = dict(in_channels=8, width=0.125)
FORWARD_TOLERANCE = 0.05


def _forward_xla_flops(in_channels, width, batch):
  model = ss.Upsampler(in_channels, width, fast_grad=False, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  x = jnp.zeros((batch, 10, 10, in_channels))
  compiled = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x)).lower(params, x).compile()
  return bm.xla_flops(compiled)


def test_uncropped_layer_flops_match_xla_exactly():
  n, h, cin, cout = 2, 12, 32, 16
  x, k = jnp.zeros((n, h, h, cin)), jnp.zeros((3, 3, cin, cout))
  fn = jax.jit(lambda x, k: conv_transpose_reference(x, k, 0.0, 2, (0, 0, 0, 0)))
  assert bm.xla_flops(fn.lower(x, k).compile()) == 2 * n * h * h * cin * cout * 9


@pytest.mark.parametrize("in_channels,width", [(8, 0.125), (64, 0.25)])
def test_forward_flops_agree_with_xla(in_channels, width):
  batch = 3
  xla = _forward_xla_flops(in_channels, width, batch)
  assert xla is not None
  analytic = ss.flops_per_sample(in_channels, width) * batch
  assert abs(analytic / xla - 1) < FORWARD_TOLERANCE


def test_train_flops_are_three_forward_passes():
  assert bm.train_flops_per_sample(256, 1.0) == 3 * ss.flops_per_sample(256, 1.0)


def test_mfu():
  assert bm.mfu(50.0, 200.0) == pytest.approx(0.25)
  assert bm.mfu(None, 200.0) is None and bm.mfu(50.0, None) is None


@pytest.mark.parametrize("kind,dtype,tflops,unit", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.5, "bf16"),
    ("NVIDIA H100 80GB HBM3", "float32", 494.5, "TF32"),  # fp32 runs as TF32 by default
    ("NVIDIA H100 PCIe", "float32", 378.0, "TF32"),
    ("NVIDIA H100 NVL", "bfloat16", 835.5, "bf16"),
    ("NVIDIA H200", "float32", 494.5, "TF32"),
    ("NVIDIA B200", "bfloat16", 2250.0, "bf16"),
    ("NVIDIA A100-SXM4-80GB", "float32", 156.0, "TF32"),
    ("NVIDIA L4", "bfloat16", 121.0, "bf16"),
    ("TPU v5 lite", "float32", 197.0, "bf16"),  # fp32 takes one bf16 pass by default
    ("TPU v5", "bfloat16", 459.0, "bf16"),
    ("TPU v5p", "bfloat16", 459.0, "bf16"),
    ("TPU v6 lite", "bfloat16", 918.0, "bf16"),
    ("TPU v4", "float32", 275.0, "bf16"),
])
def test_datasheet_peaks(kind, dtype, tflops, unit):
  peak = bm.datasheet_peak(kind, dtype)
  assert peak.gflops == pytest.approx(1e3 * tflops)
  assert f"dense {unit}" in peak.source and kind in peak.source
  assert ("TF32 under JAX's default precision" in peak.source) == (unit == "TF32")


def test_datasheet_peaks_full_precision_and_unknown_chips():
  full = bm.datasheet_peak("NVIDIA H100 80GB HBM3", "float32", precision="highest")
  assert full.gflops == pytest.approx(67_000) and "dense fp32" in full.source
  # Whole-word matches only: an L40S is not an L4, a GH200 not an H200.
  for kind in ("NVIDIA L40S", "NVIDIA GH200 480GB", "some TPU", "cpu"):
    assert bm.datasheet_peak(kind, "float32") is None


def test_time_calls_counts_rounds():
  calls = []
  t = bm.time_calls(lambda: calls.append(1) or jnp.zeros(()), seconds=0.03, rounds=3,
                    warmup=1)
  assert len(t.rates) == 3 and t.calls == len(calls) - 1 and t.best >= t.median > 0


def _params_of(state):
  return [np.asarray(p) for p in jax.tree.leaves(state.params)]


def test_data_parallel_chunked_step_equals_single_device_step():
  if jax.local_device_count() < 2:
    pytest.skip("needs 2 devices (tests/conftest.py forces 2 CPU devices)")
  batch = bm.make_batch(4, TINY["in_channels"])
  single, m1 = ss.train_step(bm.make_state(**TINY), batch)
  mesh = bm.data_mesh(jax.local_devices()[:2])
  state, sharded_batch = bm.shard_for_data_parallel(bm.make_state(**TINY),
                                                           batch, mesh)
  assert sharded_batch["inputs"].sharding.spec == jax.sharding.PartitionSpec("data")
  # In two chunks of 2 samples (0, 2 and 1, 3: one from each device's block; the layout
  # itself is tested in test_train.py).
  parallel, m2 = ss.train_step(state, sharded_batch, microbatch=2)
  assert len(parallel.params["layers"][0]["kernel"][...].sharding.device_set) == 2
  np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
  for a, b in zip(_params_of(single), _params_of(parallel)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_data_parallel_rejects_uneven_batch():
  mesh = bm.data_mesh(jax.local_devices()[:2])
  if mesh.shape["data"] < 2:
    pytest.skip("needs 2 devices")
  with pytest.raises(ss.InputError):
    bm.shard_for_data_parallel(bm.make_state(**TINY),
                                      bm.make_batch(3, 8), mesh)


def test_bfloat16_train_step_is_finite():
  state = bm.make_state(**TINY, dtype="bfloat16")
  batch = bm.make_batch(4, TINY["in_channels"])
  for _ in range(2):
    state, metrics = ss.train_step(state, batch)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert all(np.isfinite(p).all() for p in _params_of(state))
  assert all(p.dtype == np.float32 for p in _params_of(state))  # params stay float32


def _run_main(**overrides):
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  values = dict(TINY, batch=4, seconds=0.3, rounds=2, peak_seconds=0.05, mode="both")
  values.update(overrides)
  with flagsaver.flagsaver(**values):
    benchmark.main(["benchmark"])


def test_main_prints_one_json_line(capsys):
  _run_main()
  lines = [l for l in capsys.readouterr().out.splitlines() if l.strip()]
  assert len(lines) == 1
  rec = json.loads(lines[0])
  assert set(bm.KEYS) <= set(rec)
  assert rec["batch"] == 4 and rec["in_channels"] == 8 and rec["params"] > 0
  assert rec["samples_per_s"] > 0 and rec["infer_samples_per_s"] > 0
  assert rec["xla_flops_per_step"] > 0 and rec["peak_gflops"] > 0 and rec["mfu"] > 0
  # Layer auto on CPU is Winograd where a layer is wide enough: not in this tiny net.
  assert rec["impl"] == "jax-custom-vjp" and rec["malloc_tune"] is False
  assert bm.impl_name("auto", "cpu", in_channels=256, width=1.0) == "jax-winograd"
  assert bm.impl_name("auto", "cpu", in_channels=256, width=1.0, dtype="bfloat16") == \
      "jax-custom-vjp"
  assert rec["xla_peak_bytes_per_device"] > rec["xla_temp_bytes"] > 0
  assert rec["epoch_samples_per_s"] is None  # mode both: the step and the forward pass


def test_epoch_part_times_whole_epochs_of_the_stock_layer(capsys):
  _run_main(mode="epoch", layer="stock", epoch_pairs=12)
  rec = json.loads(capsys.readouterr().out.strip())
  assert rec["impl"] == "jax-stock-autodiff" and rec["mode"] == "epoch"
  assert rec["epoch_steps"] == 3 and rec["epoch_samples_per_s"] > 0 and rec["epoch_mfu"] > 0
  assert rec["epoch_s"] > 0 and rec["samples_per_s"] is None


def test_the_benchmark_follows_the_size(capsys):
  _run_main(size=200, mode="epoch", epoch_pairs=8)
  rec = json.loads(capsys.readouterr().out.strip())
  assert (rec["size"], rec["scale"], rec["epoch_steps"]) == (200, 0.1, 2)
  assert rec["train_flops_per_step"] == 3 * 4 * ss.flops_per_sample(8, 0.125, 200, 0.1)
  assert rec["epoch_gflops_per_s"] > 0


@pytest.mark.parametrize("overrides,message", [
    (dict(mode="train,fast"), "mode must be one of"),
    (dict(scale=0.6), "at most half"),
    (dict(size=200, peer_python="py", peer_script="p.py"), "seed's net only"),
    (dict(sweep=True, sweep_batches=["8", "x"]), "--sweep_batches must be ints"),
    (dict(epoch_pairs=2, mode="epoch"), "batch_size 4 is larger than the 2 training pairs"),
    (dict(suite="accelerator", suite_cases=["8:0.125:custom"]), "in_channels:width:layer:dtype"),
    (dict(suite="accelerator", suite_cases=["8:0.125:fast:float32"]), "layer must be one of"),
    (dict(suite="accelerator", suite_population_sizes=["0"]), "must be positive"),
    (dict(suite="accelerator", suite_seconds=0.0), "must be > 0"),
    (dict(compare_layers=["custom"]), "compare two or more different steps"),
    (dict(compare_layers=["custom", "custom"]), "compare two or more different steps"),
    (dict(compare_layers=["custom", "fast"]), "layer must be one of"),
    (dict(compare_layers=["custom", "custom:x"]), "layer or layer:microbatch"),
    (dict(compare_layers=["custom", "custom:3"]), "microbatch 3 does not divide"),
    (dict(microbatch=3), "microbatch 3 does not divide"),
    (dict(sweep=True, sweep_batches=["4", "6"], microbatch=4), "microbatch 4 does not divide"),
    (dict(layer_forms=True, microbatch=-2), "microbatch must be an integer >= 0"),
    (dict(layer_forms=True, seconds=0.0), "must be > 0"),
])
def test_bad_flag_values_are_input_errors(overrides, message):
  with pytest.raises(ss.InputError, match=message):
    _run_main(**overrides)


def test_compare_layers_pairs_the_rounds(capsys):
  _run_main(compare_layers=["custom", "stock:2"], rounds=3, seconds=0.3)
  rec = json.loads(capsys.readouterr().out.strip())
  rates = rec["rounds_samples_per_s"]
  assert [len(rates[k]) for k in ("custom", "stock:2")] == [3, 3]
  assert rec["microbatch"] == {"custom": 4, "stock:2": 2}  # auto: 4 has no divisor in 5..10
  ratios = sorted(s / c for s, c in zip(rates["stock:2"], rates["custom"]))
  assert rec["stock:2_over_custom"] == pytest.approx(ratios[1])  # the median of 3
  low, high = rec["stock:2_over_custom_quartiles"]
  assert low <= rec["stock:2_over_custom"] <= high


def test_sweep_writes_csv_and_png(tmp_path, capsys):
  _run_main(sweep=True, sweep_batches=["2", "4"], sweep_widths=["0.03125"],
            out=str(tmp_path), mode="train", seconds=0.2)
  assert len(capsys.readouterr().out.strip().splitlines()) == 2
  with open(tmp_path / "sweep.csv") as f:
    rows = list(csv.DictReader(f))
  assert [int(r["batch"]) for r in rows] == [2, 4]
  assert all(int(r["in_channels"]) == 8 and float(r["samples_per_s"]) > 0 for r in rows)
  png = tmp_path / "sweep.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 1000


def _suite_config(photo_path, **overrides):
  from helpers import runlocal_config
  return runlocal_config(photo_path, **overrides)


def test_accelerator_suite_writes_its_table_and_the_full_run(tmp_path, photo_path):
  out = tmp_path / "acc"
  _run_main(suite="accelerator", out=str(out), suite_cases=["8:0.125:custom:float32"],
            suite_populations=["8:0.125:custom:float32"], suite_population_sizes=["1", "3"],
            epoch_pairs=8, seconds=0.2, rounds=1, suite_seconds=600.0,
            config=_suite_config(photo_path, num_epochs=2))
  result = json.loads((out / "accelerator.json").read_text())
  (rec,) = result["cases"]
  one, three = result["populations"]
  # Three nets on the conftest's two devices: four are computed, as fit_population pads.
  assert (one["nets"], one["nets_computed"], three["nets"], three["nets_computed"]) == (1, 2, 3, 4)
  assert three["devices_used"] == 2 and three["epoch_pairs"] == 8 and three["val_pairs"] == 2
  flops = 4 * (8 * bm.train_flops_per_sample(8, 0.125) + 2 * bm.flops_per_sample(8, 0.125))
  assert three["gflops_per_s"] == pytest.approx(flops / three["epoch_s"] / 1e9)
  assert three["mfu"] == pytest.approx(three["gflops_per_s"] / three["peak_gflops"])
  assert three["xla_peak_bytes_per_device"] > 0
  assert result["skipped"] == [] and rec["case"] == "C=8 w0.125 custom float32"
  assert rec["mode"] == "train,epoch" and rec["timing"].startswith("median of 1 rounds of 0.2 s")
  for key in ("samples_per_s", "mfu", "epoch_samples_per_s", "epoch_mfu",
              "xla_peak_bytes_per_device", "peak_memory_bytes"):
    assert rec[key] > 0, key
  run = result["cat_run"]
  assert run["epochs"] == 2 and run["stopped"] == "reached num_epochs=2"
  assert run["wall_s"] > 0 and len(run["stages"]) == 1 and run["impl"] == "jax-custom-vjp"
  assert len((out / "cat_metrics.jsonl").read_text().splitlines()) == 2
  assert (out / "cat_loss_curve.png").read_bytes()[:4] == b"\x89PNG"
  md = (out / "accelerator.md").read_text()
  assert "| C=8 w0.125 | custom | float32 |" in md and "- cat run (" in md
  assert "| C=8 w0.125 | custom (custom) | float32 | 3 |" in md
  assert "2 epochs in" in md and "MFU against float32: measured" in md


def test_accelerator_suite_skips_what_does_not_fit_and_says_so(tmp_path, photo_path):
  cases = bm.parse_cases(["8:0.125:custom:float32", "16:0.25:stock:bfloat16"])
  result = bm.accelerator_suite(str(tmp_path), _suite_config(photo_path), cases=cases,
                                populations=cases[:1], population_sizes=(1, 8),
                                batch=4, epoch_pairs=8, seconds=1e-3)
  assert result["cases"] == [] and result["populations"] == []
  assert [s["case"] for s in result["skipped"]] == [c.name for c in cases] + [
      "C=8 w0.125 custom float32 x1 nets", "C=8 w0.125 custom float32 x8 nets"]
  assert all("left of the cases' 0 s" in s["reason"] for s in result["skipped"][:2])
  assert all("left of the populations' 0 s" in s["reason"] for s in result["skipped"][2:])
  assert result["cat_run"]["skipped"] == "skipped: 0 s left of the budget"
  md = (tmp_path / "accelerator.md").read_text()
  assert md.count("skipped:") == 5


def test_accelerator_suite_lists_a_failing_case_and_goes_on(tmp_path, photo_path, monkeypatch):
  def fail(*args, **kwargs):
    raise RuntimeError("RESOURCE_EXHAUSTED: out of memory\nwhile allocating")

  monkeypatch.setattr(bm, "bench_case", fail)
  monkeypatch.setattr(bm, "bench_population", fail)
  monkeypatch.setattr(bm, "_cat_run", fail)
  cases = bm.parse_cases(["8:0.125:custom:float32", "8:0.125:stock:float32"])
  result = bm.accelerator_suite(str(tmp_path), _suite_config(photo_path), cases=cases,
                                populations=cases[:1], population_sizes=(1, 8),
                                batch=4, epoch_pairs=8, seconds=100.0, case_seconds=0.1,
                                peak_seconds=0.01)
  reason = "failed: RuntimeError: RESOURCE_EXHAUSTED: out of memory"
  # The larger population of a net that failed is not tried.
  assert [s["reason"] for s in result["skipped"]] == [reason, reason, reason,
                                                      "skipped: C=8 w0.125 custom float32 x1 "
                                                      "nets failed"]
  assert result["cat_run"]["skipped"] == reason
  assert (tmp_path / "accelerator.md").read_text().count(reason) == 4


def test_peer_rounds_alternate_and_get_the_tuned_env(tmp_path, capsys):
  # A stand-in peer that reports a rate set by the environment it was given, so the
  # record shows both that --peer_malloc_tune reached it and how ratios are formed.
  peer = tmp_path / "peer.py"
  peer.write_text("import json, os\n"
                  "rate = 1000.0 if os.environ.get('MALLOC_ARENA_MAX') == '1' else 1.0\n"
                  "print(json.dumps({'samples_per_s': rate}))\n")
  _run_main(peer_python=sys.executable, peer_script=str(peer), peer_malloc_tune=True,
            mode="train", rounds=2)
  rec = json.loads(capsys.readouterr().out.strip())
  assert rec["peer_env"]["MALLOC_ARENA_MAX"] == "1" and not rec["malloc_tune"]
  assert rec["peer_rounds_samples_per_s"] == [1000.0, 1000.0]
  ratios = sorted(r / 1000.0 for r in rec["rounds_samples_per_s"])
  assert rec["ratio_vs_peer"] == pytest.approx(np.mean(ratios))  # the median of 2


def test_layer_forms_times_every_layer_in_chunks():
  # The custom form only: the Winograd forms' programs are the slow part to compile, and
  # tests/test_winograd.py covers them.
  recs = bm.time_layer_forms(8, 0.125, 4, seconds=0.05, rounds=1, forms=("custom",),
                             microbatch=2)
  assert [(r["layer"], r["stride"]) for r in recs] == [(1, 1), (2, 2), (3, 1), (4, 2),
                                                       (5, 1), (6, 2)]
  assert all(r["batch"] == 4 and r["microbatch"] == 2 and r["ms"] > 0 for r in recs)
  assert all(r["speedup"] == 1 and r["gflops_per_s"] > 0 for r in recs)
  with pytest.raises(ss.InputError, match="microbatch 3 does not divide"):
    bm.time_layer_forms(8, 0.125, 4, seconds=0.05, rounds=1, microbatch=3)


_FAULTS_SCRIPT = """
import resource
from singleseg_jax import memory
kept = memory.keep_freed_memory()
def cycle():  # a 64 MiB block, as big as XLA's scratch buffer of a cat step, touched and freed
  block = bytearray(64 << 20)
  block[::4096] = b"x" * len(block[::4096])
  del block
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  cycle()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_kept_memory_serves_a_large_block_again_without_page_faults():
  # Without it glibc maps a block this large afresh on every allocation, so every page
  # faults again; with it the freed block is reused (memory.keep_freed_memory).
  def faults(keep, **tuned):
    env = {k: v for k, v in os.environ.items()  # no allocator settings of the caller's
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(tuned, **{memory.KEEP_MEMORY_ENV: keep})
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env=env, check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout.split()
    return out[0] == "True", int(out[1])

  (kept, with_keep), (not_kept, without) = faults("1"), faults("0")
  assert kept and not not_kept
  assert not faults("1", MALLOC_ARENA_MAX="1")[0]  # the caller's own tuning stands
  assert with_keep < 100 and without > 10 * max(with_keep, 5)
