"""The width ablation across images: pairing, intervals, the summary command."""
import csv
import json

import numpy as np
from PIL import Image

from helpers import cli
from singleseg_jax import ablation as S


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
  res = cli("experiments.ablation_summary", f"--runs={runs / 'dir_*'}",
             f"--out={tmp_path / 'o'}")
  assert res.returncode == 0, res.stderr[-2000:]
  md = (tmp_path / "o" / "summary.md").read_text()
  assert "| 1 vs 0.5 | -20.0 ± 0.0 % | 3 of 3 |" in md
  assert len(list(csv.DictReader(open(tmp_path / "o" / "summary.csv")))) == 6
  assert Image.open(tmp_path / "o" / "summary.png").format == "PNG"
  # Runs with other widths are refused with one line.
  _fake_ablation(runs / "dir_d", "d", {0.25: 0.02, 1.0: 0.008}, {0.25: 0.5, 1.0: 0.6})
  res = cli("experiments.ablation_summary", f"--runs={runs / 'dir_*'}",
             f"--out={tmp_path / 'o2'}")
  assert res.returncode == 2 and res.stderr.strip().startswith("error:"), res.stderr
  assert "other widths or seeds" in res.stderr and "Traceback" not in res.stderr
  res = cli("experiments.ablation_summary", f"--runs={runs / 'no_such_dir'}",
             f"--out={tmp_path / 'o3'}")
  assert res.returncode == 2 and "is not a directory" in res.stderr, res.stderr
