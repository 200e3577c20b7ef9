"""The mains end to end: kill and resume, config errors, segment, ablate_width, compare."""
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, cli, params_of, runlocal_config
from singleseg_jax import cutouts, run, variants


def test_sigkill_then_rerun_resumes_to_the_same_result(tmp_path, photo_path):
  args = ["--config=experiments/configs/default.py:runlocal", f"--config.image={photo_path}",
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
  done = cli("experiments.main", *args, f"--workdir={work}")
  assert done.returncode == 0, done.stderr[-2000:]
  run.train_and_evaluate(runlocal_config(photo_path, num_epochs=8), ref_dir)  # uninterrupted
  for a, b in zip(params_of(ref_dir), params_of(work)):
    np.testing.assert_array_equal(a, b)
  assert len(open(metrics).read().splitlines()) == 8


def test_config_overrides_and_bad_values(tmp_path, photo_path):
  out = cli("experiments.main", "--config=experiments/configs/default.py:runlocal",
             f"--config.image={photo_path}", "--config.num_epochs=1", "--config.width=0.25",
             f"--workdir={tmp_path / 'o'}")
  assert out.returncode == 0, out.stderr[-2000:]
  saved = json.load(open(tmp_path / "o" / "config.json"))
  assert saved["num_epochs"] == 1 and saved["width"] == 0.25
  bad = cli("experiments.main", "--config=experiments/configs/default.py:runlocal",
             f"--config.image={photo_path}", "--config.batch_size=1000",
             f"--workdir={tmp_path / 'b'}")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: batch_size 1000")
  missing = cli("experiments.main", "--config=experiments/configs/default.py:runlocal",
                 "--config.image=/nonexistent.jpg", f"--workdir={tmp_path / 'm'}")
  assert missing.returncode == 2 and "image not found" in missing.stderr.splitlines()[-1]


def test_segment_polygon_mask_and_box(run_dir, tmp_path, photo_path):
  poly = tmp_path / "p.json"
  poly.write_text(json.dumps([[[10, 10], [60, 12], [55, 70], [12, 65]],
                              [[30, 30], [90, 30], [90, 90]]]))
  mask = np.zeros((120, 160), np.uint8); mask[20:90, 10:80] = 255  # original frame
  Image.fromarray(mask).save(tmp_path / "m.png")
  out = tmp_path / "seg"
  res = cli("experiments.segment", f"--workdir={run_dir}", f"--outline={poly}",
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
  res = cli("experiments.segment", f"--workdir={run_dir}", "--frame=original",
             "--box=12,12,96,96", f"--out={tmp_path / 'seg2'}")
  assert res.returncode == 0, res.stderr[-2000:]


def test_segment_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path):
  out = tmp_path / "never"
  # The second box is bad: the first must not have been written either.
  res = cli("experiments.segment", f"--workdir={run_dir}", f"--out={out}",
             "--box=10,10,50,50", "--box=10,10,200,50")
  assert res.returncode == 2
  last = res.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and "outside the 100x100" in last, res.stderr[-1500:]
  assert "Traceback" not in res.stderr
  assert not out.exists()


def test_segment_missing_workdir_or_checkpoint(tmp_path):
  res = cli("experiments.segment", f"--workdir={tmp_path / 'none'}", "--box=1,1,50,50")
  assert res.returncode == 2 and "workdir not found" in res.stderr
  (tmp_path / "empty").mkdir()
  res = cli("experiments.segment", f"--workdir={tmp_path / 'empty'}", "--box=1,1,50,50")
  assert res.returncode == 2 and "not a run directory" in res.stderr


def test_ablate_width_writes_parsable_outputs(tmp_path, photo_path):
  import csv
  res = cli("experiments.ablate_width", "--config=experiments/configs/default.py:runlocal",
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
  args = ["experiments.ablate_width", "--config=experiments/configs/default.py:runlocal",
          f"--config.image={photo_path}", "--config.num_epochs=2", "--widths=0.0625",
          "--seeds=2", "--eval_d_values=0,4", "--eval_sigmas=0"]
  res = cli(*args, f"--mask={tmp_path / 'gt.png'}", f"--out={tmp_path / 'o'}")
  assert res.returncode == 0, res.stderr[-2000:]
  rows = list(csv.DictReader(open(tmp_path / "o" / "ablation.csv")))
  assert len(rows) == 2 and all(0 <= float(r["iou_full"]) <= 1 for r in rows)
  assert all(r["outlines"] == "2" and r["seeds_trained"] == "loop" for r in rows)
  assert "sloppy-outline IoU" in (tmp_path / "o" / "ablation.md").read_text()
  Image.fromarray(gt[:, :100]).save(tmp_path / "bad.png")
  bad = cli(*args, f"--mask={tmp_path / 'bad.png'}", f"--out={tmp_path / 'b'}")
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: mask is 100x120")


def test_snap_variant_end_to_end(tmp_path, photo_path):
  """configs/snap.py's variant through train, resume files, figures and segment."""
  workdir = str(tmp_path / "snap")
  info = run.train_and_evaluate(
      runlocal_config(photo_path, variant="snap", num_samples=40, batch_size=16, snap_steps=2,
              snap_hidden=16, snap_rounds=1, num_epochs=2, learning_rate=3e-3,
              snap_edge_offset=True), workdir)
  assert info["epochs"] == 2 and info["params"] > 0
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["epoch"] for r in records] == [1, 2]
  assert all(0 <= r["val_error"] <= 1 for r in records)
  grid = Image.open(os.path.join(workdir, "val_grid.png"))
  assert grid.format == "PNG" and grid.size[1] > 3 * 100  # outline, output, target rows
  config, state, image, _ = run.load_run(workdir)
  assert config.variant == "snap" and image.shape == (100, 100, 3)
  out = tmp_path / "seg"
  res = cli("experiments.segment", f"--workdir={workdir}", "--box=20,20,80,80", f"--out={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  assert Image.open(out / "row_0.png").size == (600, 200)
  assert Image.open(out / "cutout_0_full.png").size == (120, 120)
  if importlib.util.find_spec("cv2") is not None:
    assert "refined with GrabCut" in res.stdout  # auto: snap + GrabCut at full size
  else:
    assert "refined" not in res.stdout
  res = cli("experiments.segment", f"--workdir={workdir}", "--box=20,20,80,80",
             f"--out={tmp_path / 'seg2'}", "--refine=none", "--soft_edges")
  assert res.returncode == 0 and "refined" not in res.stdout, res.stderr[-2000:]
  # --soft_edges: the hard mask's cut-out with the guided filter's alpha.
  mask = np.asarray(Image.open(tmp_path / "seg2" / "mask_0_full.png")) > 0
  cut = np.asarray(Image.open(tmp_path / "seg2" / "cutout_0_full.png"))
  np.testing.assert_array_equal(cut, cutouts.rgba(cut[..., :3], mask, soft_edges=True))


def test_encdec_variant_trains_restores_and_segments(tmp_path, photo_path):
  workdir = str(tmp_path / "encdec")
  info = run.train_and_evaluate(runlocal_config(photo_path, variant="encdec", encdec_hidden=4,
                                                num_epochs=2), workdir)
  assert info["epochs"] == 2
  config, state, image, _ = run.load_run(workdir)
  assert config.variant == "encdec" and variants.for_model(state.graphdef, state.params).name \
      == "encdec"
  out = tmp_path / "seg"
  res = cli("experiments.segment", f"--workdir={workdir}", "--box=20,20,80,80", f"--out={out}")
  assert res.returncode == 0, res.stderr[-2000:]
  assert Image.open(out / "row_0.png").size == (600, 200)
  assert Image.open(out / "mask_0.png").size == (100, 100)
  assert Image.open(out / "cutout_0_full.png").size == (120, 120)


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
      # Run a predates the val-MSE column, run b has it.
      fields = IMAGE_FIELDS if name == "b" else [k for k in IMAGE_FIELDS if k != "fit_val_mse"]
      w = csv.DictWriter(f, fields)
      w.writeheader()
      w.writerows([{"image": i, "status": "ok", "fit_seconds": 10 + 5 * (name == "b"),
                    **({"fit_val_mse": 0.01 * (j + 1)} if name == "b" else {})}
                   for j, i in enumerate(("x", "y", "z"))])
    runs.append(str(d))
  res = cli("experiments.compare", f"--runs={','.join(runs)}", f"--out={tmp_path / 'o'}")
  assert res.returncode == 0, res.stderr[-2000:]
  with open(tmp_path / "o" / "ablation.csv") as f:
    table = {r["method"]: r for r in csv.DictReader(f)}
  assert set(table) == {"net: paper (a)", "net: snap (b)", "outline", "grabcut_trimap_full"}
  np.testing.assert_allclose(float(table["net: snap (b)"]["diff"]), 0.05, atol=1e-9)
  np.testing.assert_allclose(float(table["net: paper (a)"]["iou_full"]), 0.6 + 0.02 / 3)
  assert float(table["net: snap (b)"]["fit_s"]) == 15
  np.testing.assert_allclose(float(table["net: snap (b)"]["val_mse"]), 0.02)
  assert np.isnan(float(table["net: paper (a)"]["val_mse"]))
  assert "| net: snap (b) |" in (tmp_path / "o" / "ablation.md").read_text()
  # Runs on other outlines are refused with one line.
  def rewrite(rows):
    with open(os.path.join(runs[1], "results.csv"), "w", newline="") as f:
      w = csv.DictWriter(f, FIELDS)
      w.writeheader()
      w.writerows(rows)

  rows = list(csv.DictReader(open(os.path.join(runs[1], "results.csv"))))
  rows[0]["d"] = "2.0"
  rewrite(rows)
  res = cli("experiments.compare", f"--runs={','.join(runs)}", f"--out={tmp_path / 'o2'}")
  assert res.returncode == 2 and res.stderr.strip().startswith("error:")
  assert "same flags" in res.stderr
  # A run cut short (image z missing) compares on the common images only when asked.
  rows = [r for r in rows if r["image"] != "z"]
  rows[0]["d"] = "0.0"
  rewrite(rows)
  res = cli("experiments.compare", f"--runs={','.join(runs)}", f"--out={tmp_path / 'o3'}")
  assert res.returncode == 2 and "same flags" in res.stderr
  res = cli("experiments.compare", f"--runs={','.join(runs)}", f"--out={tmp_path / 'o3'}",
            "--common_images")
  assert res.returncode == 0, res.stderr[-2000:]
  with open(tmp_path / "o3" / "ablation.csv") as f:
    table = {r["method"]: r for r in csv.DictReader(f)}
  assert {r["images"] for r in table.values()} == {"2"}
  np.testing.assert_allclose(float(table["net: snap (b)"]["val_mse"]), 0.015)  # x and y
  np.testing.assert_allclose(float(table["net: paper (a)"]["iou_full"]), 0.61)  # x and y


def test_segment_refine_grabcut_on_a_paper_run_is_one_line(run_dir, tmp_path):
  res = cli("experiments.segment", f"--workdir={run_dir}", "--box=20,20,80,80",
             f"--out={tmp_path / 'o'}", "--refine=grabcut")
  assert res.returncode == 2 and res.stderr.strip().startswith("error:")
  assert "snap" in res.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,message", [
    (["--config=experiments/configs/default.py:runlocal", "--config.nonexistent=1",
      "--workdir=W"], "unknown config field 'nonexistent'"),
    (["--config=no_such_config.py", "--workdir=W"], "config file not found"),
    (["--config=experiments/configs/default.py", "--config.num_epochs=abc", "--workdir=W"],
     "num_epochs"),
    (["--config=experiments/configs/default.py"], "--workdir"),
])
def test_flag_mistakes_are_one_line_and_write_nothing(tmp_path, args, message):
  args = [a.replace("W", str(tmp_path / "w")) for a in args]
  res = cli("experiments.main", *args)
  lines = res.stderr.strip().splitlines()
  assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.stderr
  assert message in lines[0] and not (tmp_path / "w").exists()


def test_page_killed_mid_training_resumes_and_a_second_writer_is_refused(tmp_path, photo_path):
  from experiments.web import server
  work = str(tmp_path / "w")
  common = [f"--config.image={photo_path}", "--config.patience=1000",
            "--config.checkpoint_every=5", f"--workdir={work}"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, "-m", "experiments.serve", f"--image={photo_path}",
                           "--config=experiments/configs/default.py:runlocal", "--port=0",
                           "--config.num_epochs=400", *common], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  metrics = os.path.join(work, "metrics.jsonl")
  try:
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
      if os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= 8:
        break
      time.sleep(0.05)
    second = cli("experiments.main", "--config=experiments/configs/default.py:runlocal",
                 "--config.num_epochs=400", *common)
    assert second.returncode == 2 and "in use by another run" in second.stderr, second.stderr
  finally:
    proc.send_signal(signal.SIGKILL)  # the page's training thread dies with it, unsaved
    proc.wait()
  steps = {k: sorted(int(s) for s in os.listdir(os.path.join(work, "checkpoints", k))
                     if s.isdigit()) for k in ("latest", "best")}
  assert steps["latest"] and steps["best"]
  total = steps["latest"][-1] + 12  # past the killed run's saved bests
  config = runlocal_config(photo_path, num_epochs=total, patience=1000, checkpoint_every=5)
  app = server.App(work, config)
  app.start()
  deadline = time.time() + 180
  while app.state == "training" and time.time() < deadline:
    time.sleep(0.1)
  assert app.state == "ready", app.error
  rows = [json.loads(l) for l in open(metrics)]
  assert [r["epoch"] for r in rows] == list(range(1, total + 1))
