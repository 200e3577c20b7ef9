"""The evaluation of a directory of images, end to end through `experiments.evaluate`."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, synthetic
from singleseg_jax import geometry
from singleseg_jax.evaluation import dataset, outlines


def _write_set(root):
  """Two synthetic photos, one whose centre crop has almost no object, one unreadable
  pair (mask of the wrong size) and one image without a mask."""
  os.makedirs(root / "images")
  os.makedirs(root / "masks")

  def save(name, img, mask, ext="png"):
    Image.fromarray(img).save(root / "images" / f"{name}.{ext}")
    if mask is not None:
      Image.fromarray(mask).save(root / "masks" / f"{name}.png")

  img, disc = synthetic(120, 160, r=30)
  gt = np.where(disc, 255, 0).astype(np.uint8)
  ring = geometry.within_distance(disc, 1) & ~outlines.offset_mask(disc, -1)
  gt[ring] = 128
  save("a_disc", img, gt, "jpg")
  rng = np.random.default_rng(3)
  sq = np.clip(rng.normal(70, 10, (130, 110, 3)), 0, 255).astype(np.uint8)
  sq[30:90, 25:85] = [40, 200, 90]
  gtsq = np.zeros((130, 110), np.uint8)
  gtsq[30:90, 25:85] = 255
  save("b_square", sq, gtsq)
  tiny = np.zeros((100, 200), np.uint8)
  tiny[2:6, 2:6] = 255  # outside the centre crop
  save("c_tiny", np.full((100, 200, 3), 90, np.uint8), tiny)
  save("d_badmask", img, np.zeros((10, 10), np.uint8))
  save("e_nomask", img, None)


def test_evaluate_cli_end_to_end(tmp_path):
  pytest.importorskip("cv2")
  data = tmp_path / "data"
  _write_set(data)
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--config=experiments/configs/default.py:runlocal",
       "--config.num_epochs=2", f"--data_dir={data}", f"--out={out}", "--d_values=-3,0,4",
       "--sigmas=0,1.5", "--vertices=16", "--seeds=1"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("results.csv", "images.csv", "summary.md", "iou_vs_error.png", "skipped.txt"):
    assert os.path.exists(out / name), name
  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  methods = {"net", "outline", "outline_superpixels", "thumbnail_nearest", "thumbnail_bicubic",
             "grabcut_100", "grabcut_full", "grabcut_trimap_full", "net_grabcut_full",
             "union_grabcut_full", "edgeband_grabcut_full", "grabcut_grown_full"}
  assert {r["method"] for r in rows} == methods
  assert {r["image"] for r in rows} == {"a_disc", "b_square"}
  assert {r["variant"] for r in rows if r["method"] == "net"} == {"paper"}
  assert len(rows) == 2 * 3 * 2 * 1 * len(methods)  # images x d x sigma x seeds x methods
  for r in rows:
    for k in ("iou", "bf", "iou_full", "bf_full", "outline_iou", "outline_iou_full"):
      assert 0 <= float(r[k]) <= 1, (k, r)
    assert float(r["seconds"]) >= 0 and float(r["fit_seconds"]) > 0 and r["fit_epochs"] == "2"
  exact = [r for r in rows if r["method"] == "outline" and r["d"] == "0.0" and r["sigma"] == "0.0"]
  assert all(float(r["iou"]) > 0.9 for r in exact)
  grab = [float(r["iou_full"]) for r in rows if r["method"] == "grabcut_trimap_full"]
  assert np.mean(grab) > 0.85  # easy synthetic objects
  with open(out / "images.csv") as f:
    images = list(csv.DictReader(f))
  status = {r["image"]: r["status"] for r in images}
  # Per-pixel MSE of a [0, 1] image: in (0, 1) for every fitted image.
  assert all(0 < float(r["fit_val_mse"]) < 1 for r in images if r["status"] == "ok")
  assert status == {"a_disc": "ok", "b_square": "ok", "c_tiny": "skipped",
                    "d_badmask": "failed", "e_nomask": "skipped"}
  skipped = (out / "skipped.txt").read_text()
  assert "c_tiny" in skipped and "< 1%" in skipped and "d_badmask" in skipped
  summary = (out / "summary.md").read_text()
  assert "| grabcut_trimap_full |" in summary and "±" in summary and "d=-3" in summary
  assert Image.open(out / "iou_vs_error.png").format == "PNG"
  assert "ETA" in proc.stderr and "d_badmask failed" in proc.stderr


def test_evaluate_cli_bad_flags_are_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--config=experiments/configs/default.py:runlocal",
       f"--data_dir={tmp_path}", f"--out={tmp_path / 'o'}", "--methods=outline"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr.strip().startswith("error:")
  assert "no images/ directory" in proc.stderr
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--config=experiments/configs/default.py:runlocal",
       f"--data_dir={tmp_path}", f"--out={tmp_path / 'o'}", "--methods=net_grabcut_full,net"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "needs net listed before it" in proc.stderr


@pytest.mark.parametrize("flag", ["band", "edge_band", "tolerance"])
def test_a_length_that_is_not_a_finite_number_is_refused_before_any_write(tmp_path, flag):
  from experiments.configs import default
  from singleseg_jax import InputError
  out = tmp_path / "out"
  with pytest.raises(InputError, match="finite number >= 0, got nan"):
    dataset.evaluate_dataset(default.get_config("runlocal"), str(tmp_path), str(out),
                             settings=[], methods=["outline"], **{flag: float("nan")})
  assert not out.exists()


def test_lengths_are_pixels_of_the_100x100_frame_at_any_size(tmp_path):
  # The same outline setting (d, sigma, tolerance in pixels at 100x100) scores about
  # the same on a 100x100 and a 200x200 evaluation: offsets and tolerances scale with
  # the side (unscaled, each offset at 200x200 would be half as sloppy: IoU nearer 1).
  import ml_collections
  from singleseg_jax.evaluation import protocol
  img, disc = synthetic(120, 160, r=30)
  Image.fromarray(img).save(tmp_path / "a.png")
  Image.fromarray(np.where(disc, 255, 0).astype(np.uint8)).save(tmp_path / "m.png")
  settings = [protocol.Setting(-4, 0.0, 0, 0), protocol.Setting(6, 0.0, 0, 0),
              protocol.Setting(1, 1.0, 16, 0)]
  scores = {}
  for size in (100, 200):
    config = ml_collections.ConfigDict({"size": size, "scale": 0.1})
    case = protocol.load_case("a", tmp_path / "a.png", tmp_path / "m.png", config, "center")
    rows, _ = protocol.evaluate_image(case, None, settings, ["outline"],
                                      protocol.options("paper"), {})
    scores[size] = np.array([[r["iou"], r["bf"], r["iou_full"]] for r in rows])
  np.testing.assert_allclose(scores[200], scores[100], atol=0.03)
