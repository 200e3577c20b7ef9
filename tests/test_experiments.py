"""The experiment entry points end to end with the runlocal config."""
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

import singleseg_jax as ss
from singleseg_jax import cutouts
from singleseg_jax import run as train
from experiments.configs import runlocal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(image_path, **overrides):
  config = runlocal.get_config()
  config.image = str(image_path)
  for k, v in overrides.items():
    config[k] = v
  return config


def _cli(module, *args, timeout=240):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory, photo):
  path = tmp_path_factory.mktemp("img") / "photo.png"
  Image.fromarray(photo).save(path)
  return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, photo_path):
  workdir = str(tmp_path_factory.mktemp("run") / "w")
  train.train_and_evaluate(_config(photo_path), workdir)
  return workdir


def _params(workdir, which="latest"):
  _, state, _, _ = train.load_run(workdir, which)
  return jax.tree.leaves(state.params)


def _tensorboard_scalars(logdir) -> dict:
  """{tag: {step: value}} read back from the TFRecord event files in `logdir`."""
  import glob
  import struct
  from tensorboardX.proto import event_pb2
  out = {}
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        out.setdefault(v.tag, {})[event.step] = v.simple_value
  return out


def test_runlocal_writes_tensorboard_events(run_dir):
  pytest.importorskip("tensorboardX")
  rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
  scalars = _tensorboard_scalars(os.path.join(run_dir, "tensorboard"))
  assert {"train_loss", "val_loss", "val_mse"} <= set(scalars)
  assert scalars["val_loss"] == pytest.approx({r["epoch"]: r["val_loss"] for r in rows},
                                              rel=1e-6)


def test_runlocal_writes_valid_files(run_dir):
  for name in ("config.json", "run.json", "image.png", "thumbnail.png", "metrics.jsonl",
               "loss_curve.png", "val_grid.png"):
    assert os.path.exists(os.path.join(run_dir, name)), name
  rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert all(np.isfinite(r["val_loss"]) and r["val_mse"] < 1 for r in rows)
  info = json.load(open(os.path.join(run_dir, "run.json")))
  assert info["epochs"] == 3 and info["stopped"].startswith("reached")
  assert Image.open(os.path.join(run_dir, "image.png")).size == (100, 100)
  assert Image.open(os.path.join(run_dir, "loss_curve.png")).format == "PNG"
  config, state, image, _ = train.load_run(run_dir)
  assert config.in_channels == 8 and image.shape == (100, 100, 3)
  assert int(state.step) == 9  # 30 train pairs / batch 10 = 3 updates x 3 epochs
  assert os.path.isdir(os.path.join(run_dir, "checkpoints", "best"))


def test_rerun_of_finished_run_changes_nothing(run_dir, photo_path):
  before = _params(run_dir)
  train.train_and_evaluate(_config(photo_path), run_dir)
  rows = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
  assert len(rows) == 3
  for a, b in zip(before, _params(run_dir)):
    np.testing.assert_array_equal(a, b)


def test_resume_equals_uninterrupted(tmp_path, photo_path, run_dir):
  # Stop after 2 epochs (as a kill after the epoch-2 checkpoint would), then resume.
  work = str(tmp_path / "w")
  train.train_and_evaluate(_config(photo_path, num_epochs=2), work)
  info = train.train_and_evaluate(_config(photo_path), work)
  assert info["epochs"] == 3
  for a, b in zip(_params(run_dir), _params(work)):
    np.testing.assert_array_equal(a, b)
  rows = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
  ref = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
  assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in ref]


def test_sigkill_then_rerun_resumes_to_the_same_result(tmp_path, photo_path):
  args = ["--config=experiments/configs/runlocal.py", f"--config.image={photo_path}",
          "--config.num_epochs=8"]
  ref_dir, work = str(tmp_path / "ref"), str(tmp_path / "killed")
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, "-m", "experiments.main", *args, f"--workdir={work}"],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics = os.path.join(work, "metrics.jsonl")
  deadline = time.time() + 180
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= 3:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = _cli("experiments.main", *args, f"--workdir={work}")
  assert done.returncode == 0, done.stderr[-2000:]
  train.train_and_evaluate(_config(photo_path, num_epochs=8), ref_dir)  # uninterrupted
  for a, b in zip(_params(ref_dir), _params(work)):
    np.testing.assert_array_equal(a, b)
  assert len(open(metrics).read().splitlines()) == 8


def test_config_overrides_and_bad_values(tmp_path, photo_path):
  out = _cli("experiments.main", "--config=experiments/configs/runlocal.py",
             f"--config.image={photo_path}", "--config.num_epochs=1", "--config.width=0.25",
             f"--workdir={tmp_path / 'o'}")
  assert out.returncode == 0, out.stderr[-2000:]
  saved = json.load(open(tmp_path / "o" / "config.json"))
  assert saved["num_epochs"] == 1 and saved["width"] == 0.25
  bad = _cli("experiments.main", "--config=experiments/configs/runlocal.py",
             f"--config.image={photo_path}", "--config.batch_size=1000",
             f"--workdir={tmp_path / 'b'}")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: batch_size 1000")
  missing = _cli("experiments.main", "--config=experiments/configs/runlocal.py",
                 "--config.image=/nonexistent.jpg", f"--workdir={tmp_path / 'm'}")
  assert missing.returncode == 2 and "image not found" in missing.stderr.splitlines()[-1]


def test_changed_config_in_same_workdir_is_refused(run_dir, photo_path):
  with pytest.raises(ss.InputError, match="different config"):
    train.train_and_evaluate(_config(photo_path, width=0.25), run_dir)


def test_segment_polygon_mask_and_box(run_dir, tmp_path, photo_path):
  poly = tmp_path / "p.json"
  poly.write_text(json.dumps([[[10, 10], [60, 12], [55, 70], [12, 65]],
                              [[30, 30], [90, 30], [90, 90]]]))
  mask = np.zeros((120, 160), np.uint8); mask[20:90, 10:80] = 255  # original frame
  Image.fromarray(mask).save(tmp_path / "m.png")
  out = tmp_path / "seg"
  res = _cli("experiments.segment", f"--workdir={run_dir}", f"--outline={poly}",
             f"--outline={tmp_path / 'm.png'}", "--box=20,20,80,80", f"--out={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  for k in range(4):
    row = Image.open(out / f"row_{k}.png")
    assert row.size == (600, 200)
    assert Image.open(out / f"mask_{k}.png").size == (100, 100)
    cut = Image.open(out / f"cutout_{k}.png")
    assert cut.mode == "RGBA" and cut.size == (100, 100)
    full = Image.open(out / f"cutout_{k}_full.png")
    assert full.mode == "RGBA" and full.size == (120, 120)  # the 120x120 top-left crop
  # An original-frame box maps into the crop.
  res = _cli("experiments.segment", f"--workdir={run_dir}", "--frame=original",
             "--box=12,12,96,96", f"--out={tmp_path / 'seg2'}")
  assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("outlines,boxes,frame,message", [
    ([], ["10,10,200,50"], "net", "outside the 100x100"),
    ([], ["50,50,10,10"], "net", "x0 < x1"),
    ([], ["1,2,3"], "net", "x0,y0,x1,y1"),
    (["/nope.json"], [], "net", "cannot read outline"),
    (["/nope.png"], [], "net", "outline not found"),
    (["BAD_JSON"], [], "net", "expected"),
    (["DEGENERATE"], [], "net", "degenerate"),
    (["WRONG_SIZE"], [], "net", "expected 100x100"),
    ([], ["0,0,150,50"], "original", "outside the cropped square"),
    ([], [], "net", "at least one"),
])
def test_bad_outlines_are_input_errors(tmp_path, outlines, boxes, frame, message):
  (tmp_path / "bad.json").write_text(json.dumps({"polygon": "nope"}))
  (tmp_path / "deg.json").write_text(json.dumps([[1, 1], [5, 5], [9, 9]]))
  Image.fromarray(np.zeros((7, 9), np.uint8)).save(tmp_path / "wrong.png")
  subst = {"BAD_JSON": tmp_path / "bad.json", "DEGENERATE": tmp_path / "deg.json",
           "WRONG_SIZE": tmp_path / "wrong.png"}
  outlines = [str(subst.get(o, o)) for o in outlines]
  info = {"crop_box": [0, 0, 120], "original_hw": [120, 160]}
  with pytest.raises(ss.InputError, match=message):
    cutouts.collect_outlines(outlines, boxes, frame, info, 100)


def test_segment_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path):
  out = tmp_path / "never"
  # The second box is bad: the first must not have been written either.
  res = _cli("experiments.segment", f"--workdir={run_dir}", f"--out={out}",
             "--box=10,10,50,50", "--box=10,10,200,50")
  assert res.returncode == 2
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and "outside the 100x100" in last, res.stderr[-1500:]
  assert "Traceback" not in res.stderr
  assert not out.exists()


def test_segment_missing_workdir_or_checkpoint(tmp_path):
  res = _cli("experiments.segment", f"--workdir={tmp_path / 'none'}", "--box=1,1,50,50")
  assert res.returncode == 2 and "workdir not found" in res.stderr
  (tmp_path / "empty").mkdir()
  res = _cli("experiments.segment", f"--workdir={tmp_path / 'empty'}", "--box=1,1,50,50")
  assert res.returncode == 2 and "not a run directory" in res.stderr


def test_ablate_width_writes_parsable_outputs(tmp_path, photo_path):
  import csv
  res = _cli("experiments.ablate_width", "--config=experiments/configs/runlocal.py",
             f"--config.image={photo_path}", "--config.num_epochs=2", "--widths=0.03125,0.0625",
             "--seeds=2", f"--out={tmp_path}", "--compare_loop", "--together=vmap")
  assert res.returncode == 0, res.stderr[-2000:]
  rows = list(csv.DictReader(open(tmp_path / "ablation.csv")))
  assert len(rows) == 4 and {r["width"] for r in rows} == {"0.03125", "0.0625"}
  assert {r["seeds_trained"] for r in rows} == {"vmap"}
  assert all(0 < float(r["best_val_mse"]) < 1 and r["in_channels"] in ("8", "16") for r in rows)
  md = (tmp_path / "ablation.md").read_text()
  assert "| 0.0625 | 16 |" in md and "vmapped" in md
  assert Image.open(tmp_path / "ablation.png").format == "PNG"


def test_ablate_width_scores_sloppy_outlines_with_a_mask(tmp_path, photo_path):
  """--mask adds each net's IoU on simulated outlines; a mask of the wrong size is one line."""
  import csv
  yy, xx = np.mgrid[:120, :160]
  gt = np.where((yy - 55) ** 2 + (xx - 50) ** 2 < 30 ** 2, 255, 0).astype(np.uint8)
  Image.fromarray(gt).save(tmp_path / "gt.png")
  args = ["experiments.ablate_width", "--config=experiments/configs/runlocal.py",
          f"--config.image={photo_path}", "--config.num_epochs=2", "--widths=0.0625",
          "--seeds=2", "--eval_d_values=0,4", "--eval_sigmas=0"]
  res = _cli(*args, f"--mask={tmp_path / 'gt.png'}", f"--out={tmp_path / 'o'}")
  assert res.returncode == 0, res.stderr[-2000:]
  rows = list(csv.DictReader(open(tmp_path / "o" / "ablation.csv")))
  assert len(rows) == 2 and all(0 <= float(r["iou_full"]) <= 1 for r in rows)
  assert all(r["outlines"] == "2" and r["seeds_trained"] == "loop" for r in rows)
  assert "sloppy-outline IoU" in (tmp_path / "o" / "ablation.md").read_text()
  Image.fromarray(gt[:, :100]).save(tmp_path / "bad.png")
  bad = _cli(*args, f"--mask={tmp_path / 'bad.png'}", f"--out={tmp_path / 'b'}")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: mask is 100x120")


def test_load_run_reads_checkpoint_and_needs_run_json(tmp_path, photo_path):
  work = str(tmp_path / "w")
  train.train_and_evaluate(_config(photo_path, num_epochs=1), work)
  config, state, image, info = train.load_run(work)
  assert info["crop_box"] == [0, 0, 120] and int(state.step) == 3
  os.remove(os.path.join(work, "run.json"))
  with pytest.raises(ss.InputError, match="run.json"):
    train.load_run(work)


def test_snap_variant_end_to_end(tmp_path, photo_path):
  """configs/snap.py's variant through train, resume files, figures and segment."""
  workdir = str(tmp_path / "snap")
  info = train.train_and_evaluate(
      _config(photo_path, variant="snap", num_samples=40, batch_size=16, snap_steps=2,
              snap_hidden=16, snap_rounds=1, num_epochs=2, learning_rate=3e-3), workdir)
  assert info["epochs"] == 2 and info["params"] > 0
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["epoch"] for r in records] == [1, 2]
  assert all(0 <= r["val_error"] <= 1 for r in records)
  grid = Image.open(os.path.join(workdir, "val_grid.png"))
  assert grid.format == "PNG" and grid.size[1] > 3 * 100  # outline, output, target rows
  config, state, image, _ = train.load_run(workdir)
  assert config.variant == "snap" and image.shape == (100, 100, 3)
  out = tmp_path / "seg"
  res = _cli("experiments.segment", f"--workdir={workdir}", "--box=20,20,80,80", f"--out={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  assert Image.open(out / "row_0.png").size == (600, 200)
  assert Image.open(out / "cutout_0_full.png").size == (120, 120)
  if importlib.util.find_spec("cv2") is not None:
    assert "refined with GrabCut" in res.stdout  # auto: snap + GrabCut at full size
  else:
    assert "refined" not in res.stdout
  res = _cli("experiments.segment", f"--workdir={workdir}", "--box=20,20,80,80",
             f"--out={tmp_path / 'seg2'}", "--refine=none")
  assert res.returncode == 0 and "refined" not in res.stdout, res.stderr[-2000:]


def test_compare_builds_the_ablation_table(tmp_path):
  from singleseg_jax.evaluation.reports import IMAGE_FIELDS, RESULT_FIELDS as FIELDS
  runs = []
  for name, variant, shift in (("a", "paper", 0.0), ("b", "snap", 0.1)):
    d = tmp_path / name
    d.mkdir()
    rows = []
    for image in ("x", "y", "z"):
      for method, iou in (("net", 0.6 + shift), ("outline", 0.7), ("grabcut_trimap_full", 0.65)):
        iou_img = iou + (0.02 if image == "y" else 0.0)
        rows.append({"image": image, "method": method, "variant": variant if method == "net"
                     else "", "d": "0.0", "sigma": "0.0", "vertices": "16", "seed": "0",
                     "side": "100", "outline_iou": "0.7", "outline_iou_full": "0.7",
                     "iou": iou_img, "bf": 0.5, "bf_precision": 0.5, "bf_recall": 0.5,
                     "iou_full": iou_img, "bf_full": 0.5, "seconds": 0.01,
                     "fit_seconds": 10, "fit_epochs": 2, "note": ""})
    with open(d / "results.csv", "w", newline="") as f:
      w = csv.DictWriter(f, FIELDS)
      w.writeheader()
      w.writerows(rows)
    with open(d / "images.csv", "w", newline="") as f:
      w = csv.DictWriter(f, IMAGE_FIELDS)
      w.writeheader()
      w.writerows([{"image": i, "status": "ok", "fit_seconds": 10 + 5 * (name == "b")}
                   for i in ("x", "y", "z")])
    runs.append(str(d))
  res = _cli("experiments.compare", f"--runs={','.join(runs)}", f"--out={tmp_path / 'o'}")
  assert res.returncode == 0, res.stderr[-2000:]
  with open(tmp_path / "o" / "ablation.csv") as f:
    table = {r["method"]: r for r in csv.DictReader(f)}
  assert set(table) == {"net: paper (a)", "net: snap (b)", "outline", "grabcut_trimap_full"}
  np.testing.assert_allclose(float(table["net: snap (b)"]["diff"]), 0.05, atol=1e-9)
  np.testing.assert_allclose(float(table["net: paper (a)"]["iou_full"]), 0.6 + 0.02 / 3)
  assert float(table["net: snap (b)"]["fit_s"]) == 15
  assert "| net: snap (b) |" in (tmp_path / "o" / "ablation.md").read_text()
  # Runs on other outlines are refused with one line.
  rows = list(csv.DictReader(open(os.path.join(runs[1], "results.csv"))))
  rows[0]["d"] = "2.0"
  with open(os.path.join(runs[1], "results.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, FIELDS)
    w.writeheader()
    w.writerows(rows)
  res = _cli("experiments.compare", f"--runs={','.join(runs)}", f"--out={tmp_path / 'o2'}")
  assert res.returncode == 2 and res.stderr.strip().startswith("error:")
  assert "same flags" in res.stderr


def test_segment_refine_grabcut_on_a_paper_run_is_one_line(run_dir, tmp_path):
  res = _cli("experiments.segment", f"--workdir={run_dir}", "--box=20,20,80,80",
             f"--out={tmp_path / 'o'}", "--refine=grabcut")
  assert res.returncode == 2 and res.stderr.strip().startswith("error:")
  assert "snap" in res.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "o").exists()


def _fake_ablation(d, image, mse_by_width, iou_by_width, seeds=(0, 1)):
  """An ablate_width output dir: the seeds of a width scatter +-10% around the value."""
  d.mkdir()
  rows = []
  for w, mse in mse_by_width.items():
    for s in seeds:
      f = 1.0 + (0.1 if s else -0.1) * (len(seeds) > 1)
      rows.append({"width": w, "in_channels": int(256 * w), "params": int(1e6 * w * w),
                   "seed": s, "epochs": 40, "best_val_loss": 1.0, "best_val_mse": mse * f,
                   "stopped": "x", "seconds_per_run": 1.0, "seeds_trained": "loop",
                   "iou_full": iou_by_width[w] * f, "bf_full": 0.3, "outlines": 14})
  with open(d / "ablation.csv", "w", newline="") as f:
    w = csv.DictWriter(f, list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  (d / "ablation.json").write_text(json.dumps({"config": {"image": f"/x/{image}.jpg"}}))
  return str(d)


def test_ablation_summary_pairs_widths_across_images(tmp_path):
  from singleseg_jax import ablation as S
  runs = tmp_path / "runs"
  runs.mkdir()
  # Wider: val MSE 20% lower on every image; IoU up on "a" and "b", down on "c".
  for name, iou_w in (("a", 0.62), ("b", 0.61), ("c", 0.55)):
    _fake_ablation(runs / f"dir_{name}", name, {0.5: 0.01, 1.0: 0.008},
                   {0.5: 0.60, 1.0: iou_w})
  rows = S.load_runs(S.expand([str(runs / "dir_*")]))
  assert sorted({r["image"] for r in rows}) == ["a", "b", "c"]  # named from the config
  a = [r for r in rows if r["image"] == "a"]
  np.testing.assert_allclose([r["best_val_mse"] for r in a], [0.01, 0.008])  # seed mean
  assert [r["seeds"] for r in a] == [2, 2]
  p = S.paired(rows, 0.5, 1.0)
  np.testing.assert_allclose(p["dmse_pct"][0], -20.0)
  assert p["dmse_pct"][1] < 1e-9  # the same change on every image: no spread
  assert p["mse_better"] == 3 and p["iou_better"] == 2
  np.testing.assert_allclose(p["diou"][0], (0.02 + 0.01 - 0.05) / 3)
  mean, half = p["diou"]
  assert half > abs(mean)  # one image against two: the interval spans zero
  # The CLI writes the table, the CSV and the plot.
  res = _cli("experiments.ablation_summary", f"--runs={runs / 'dir_*'}",
             f"--out={tmp_path / 'o'}")
  assert res.returncode == 0, res.stderr[-2000:]
  md = (tmp_path / "o" / "summary.md").read_text()
  assert "| 1 vs 0.5 | -20.0 ± 0.0 % | 3 of 3 |" in md
  assert len(list(csv.DictReader(open(tmp_path / "o" / "summary.csv")))) == 6
  assert Image.open(tmp_path / "o" / "summary.png").format == "PNG"
  # Runs with other widths are refused with one line.
  _fake_ablation(runs / "dir_d", "d", {0.25: 0.02, 1.0: 0.008}, {0.25: 0.5, 1.0: 0.6})
  res = _cli("experiments.ablation_summary", f"--runs={runs / 'dir_*'}",
             f"--out={tmp_path / 'o2'}")
  assert res.returncode == 2 and res.stderr.strip().startswith("error:"), res.stderr
  assert "other widths or seeds" in res.stderr and "Traceback" not in res.stderr
  res = _cli("experiments.ablation_summary", f"--runs={runs / 'no_such_dir'}",
             f"--out={tmp_path / 'o3'}")
  assert res.returncode == 2 and "is not a directory" in res.stderr, res.stderr
