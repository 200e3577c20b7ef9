"""The correction simulator: where it clicks, NoC on answers whose clicks are known, and
the main end to end on a synthetic set."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import cli, synthetic
from singleseg_jax import InputError, cutouts
from singleseg_jax.evaluation import corrections as C
from singleseg_jax.evaluation import metrics as M


def _labels(obj, ignore=None):
  return M.Labels(obj, np.zeros_like(obj) if ignore is None else ignore)


def _square(side, top, left, h, w=None):
  m = np.zeros((side, side), bool)
  m[top:top + h, left:left + (h if w is None else w)] = True
  return m


def test_click_is_at_the_centre_of_the_largest_error_with_its_sign():
  gt = _square(100, 20, 20, 60)
  hole = _square(100, 30, 30, 20)          # 400 px of missed object
  small = _square(100, 60, 60, 5)          # 25 px
  extra = _square(100, 85, 5, 10)          # 100 px of background taken
  pred = gt & ~hole & ~small | extra
  click = C.next_click(pred, _labels(gt))
  assert click.mode == "add" and hole[click.row, click.col]
  assert abs(click.row - 39.5) <= 0.5 and abs(click.col - 39.5) <= 0.5
  click = C.next_click(gt & ~small | extra, _labels(gt))
  assert (click.mode, click.row, click.col) == ("remove", 89, 9)
  # The band hides an error larger than any other; then nothing is left to correct.
  assert C.next_click(gt & ~small | extra, _labels(gt, extra | small)) is None
  # The image border is border: a strip along the top edge is clicked at its middle row.
  strip = _square(100, 0, 10, 6, 80)
  click = C.next_click(gt | strip, _labels(gt))
  assert click.mode == "remove" and click.row in (2, 3) and abs(click.col - 49.5) <= 0.5


def test_a_click_is_a_tap_of_the_pages_stroke_on_its_pixel():
  click = C.Click(57, 123, "add")
  add, remove = cutouts.stroke_masks([click.stroke(100, 200)], 100, (200, 200))
  assert add[57, 123] and not remove.any()
  rows, cols = np.nonzero(add)
  width = round(cutouts.STROKE_WIDTH * 2)  # PIL's disc spans its bounds inclusively: +1
  assert width <= rows.max() - rows.min() + 1 <= width + 1
  assert rows.mean() == 57 and cols.mean() == 123  # centred on the pixel


def _oracle_case():
  """A 120x120 object at 200x200 with three holes of 1600, 1200 and 400 px."""
  gt = _square(200, 40, 40, 120)
  holes = [_square(200, 50, 50, 40), _square(200, 100, 60, 40, 30), _square(200, 60, 120, 20)]
  return gt, holes, gt & ~np.any(holes, axis=0)


def test_an_answer_that_fills_each_clicked_hole_reaches_iou_1_in_the_known_clicks():
  gt, holes, start = _oracle_case()

  def oracle(strokes):  # fills every hole an add click touches
    add, _ = cutouts.stroke_masks(strokes, 100, gt.shape)
    return start | np.any([h for h in holes if (h & add).any()] or [np.zeros_like(gt)], axis=0)

  trace = C.simulate(oracle, _labels(gt), 100, tolerance=4.0, cap=6)
  area = gt.sum()
  np.testing.assert_allclose(trace.iou, [(area - 3200) / area, (area - 1600) / area,
                                         (area - 400) / area, 1, 1, 1, 1])
  assert [c.mode for c in trace.clicks] == ["add"] * 3  # then nothing is left to click
  hit = [next(i for i, h in enumerate(holes) if h[c.row, c.col]) for c in trace.clicks]
  assert hit == [0, 1, 2]
  assert trace.bf[3:] == [1.0] * 4
  assert C.noc(trace.iou, 0.85) == (1, True) and C.noc(trace.iou, 0.90) == (2, True)
  assert C.noc(trace.iou, 0.75) == (0, True)


def test_an_answer_that_ignores_clicks_gets_the_cap():
  gt, _, start = _oracle_case()
  trace = C.simulate(lambda strokes: start, _labels(gt), 100, tolerance=4.0, cap=4)
  assert C.noc(trace.iou, 0.85) == (4, False) and len(set(trace.iou)) == 1
  assert len(trace.clicks) == 4 and len(set(trace.clicks)) == 1  # the same place every time


def test_summary_counts_outlines_never_reached_and_clicks_that_cost_iou():
  ious = {"a": [0.5, 0.95, 0.3, 0.96], "b": [0.8, 0.82, 0.84, 0.86]}
  rows = []
  for image, v in ious.items():
    row = {"image": image, "method": "grabcut", **{f"iou_{k}": x for k, x in enumerate(v)}}
    for t in C.THRESHOLDS:
      row[f"noc{round(100 * t)}"], reached = C.noc(v, t)
      row[f"reached{round(100 * t)}"] = str(reached)
    rows.append(row)
  text = C.summary_markdown(rows, ["grabcut"], 3, {}, [])
  line = next(x for x in text.splitlines() if x.startswith("| grabcut |"))
  # NoC 1 and 3 (the cap): 2 ± t(0.975, 1) = 12.71; b misses 90; a's second click costs 0.65.
  assert line.startswith("| grabcut | 2.00 ± 12.71 | 2.00 ± 12.71 | 1 of 2 | 1 of 2 | 0.650")


def test_superpixel_clicks_claim_the_whole_superpixel_last_click_winning():
  sp = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 50, 0), 50, 1)  # four quadrants
  soft = np.full((100, 100), 0.3, np.float32)
  got = C.with_superpixel_clicks(soft, sp, [("add", [[20, 20]])])
  np.testing.assert_array_equal(got, np.where(sp == 0, 1.0, 0.3).astype(np.float32))
  got = C.with_superpixel_clicks(soft, sp, [("add", [[20, 20]]), ("remove", [[25, 30]]),
                                            ("add", [[80, 20]])])
  np.testing.assert_array_equal(got, np.select([sp == 0, sp == 1], [0.0, 1.0], soft))
  assert soft.max() == np.float32(0.3)  # the net's answer is left alone


def test_grabcut_with_a_remove_click_drops_what_the_outline_took_in():
  pytest.importorskip("cv2")
  from singleseg_jax.evaluation import protocol
  img, disc = synthetic(200, 200, r=50)
  blob = _square(200, 10, 10, 40)  # a same-coloured blob inside the outline, not object
  img[blob] = img[disc][0]
  gt = M.Labels(disc, np.zeros_like(disc))
  small = M.downsample_labels(gt, 100)
  case = protocol.Case("x", None, img, gt, small, small.object, (200, 200))
  outline = _square(100, 3, 3, 80)  # takes the blob in
  trace = C.simulate(C.answers(case, outline, None, None)["grabcut"], gt, 100, 4.0, cap=3)
  assert trace.clicks[0].mode == "remove" and blob[trace.clicks[0].row, trace.clicks[0].col]
  assert trace.iou[0] < 0.8 and max(trace.iou) > 0.9


def test_check_refuses_net_methods_without_a_snap_config():
  from experiments.configs import evaluate, evaluate_snap
  with pytest.raises(InputError, match="need a snap config"):
    C.check(["grabcut", "snap"], evaluate.get_config(), 5)
  with pytest.raises(InputError, match="unknown method"):
    C.check(["click"], evaluate_snap.get_config(), 5)
  with pytest.raises(InputError, match="max_clicks"):
    C.check(["snap"], evaluate_snap.get_config(), 0)


def test_every_net_method_keeps_each_click_right():
  """hybrid, snap and snap_superpixels on an untrained snap net: whatever the net says,
  the clicked pixel ends with the click's label (sure label, paint or superpixel)."""
  pytest.importorskip("cv2")
  import jax
  from singleseg_jax import image as image_lib
  from singleseg_jax.evaluation import protocol
  from singleseg_jax.fit import FitOptions
  from singleseg_jax.variants import get
  img, disc = synthetic(200, 200, r=50)
  state = get("snap").init(jax.random.key(0), FitOptions(variant="snap", snap_hidden=8,
                                                         snap_rounds=1))
  small_img = image_lib.resize_uint8(img, (100, 100))
  gt = M.Labels(disc, np.zeros_like(disc))
  small = M.downsample_labels(gt, 100)
  case = protocol.Case("x", None, img, gt, small, small.object, (200, 200))
  outline = _square(100, 20, 20, 60)
  soft = protocol.NetRunner(state, small_img, 0)(outline)[1]
  methods = C.answers(case, outline, soft, C.superpixel_labels(state, small_img))
  for name in ("hybrid", "snap", "snap_superpixels"):
    trace = C.simulate(methods[name], gt, 100, 4.0, cap=2)
    strokes = [c.stroke(100, 200) for c in trace.clicks]
    final = methods[name](strokes)
    for c in trace.clicks:
      assert final[c.row, c.col] == disc[c.row, c.col], (name, c)
    assert trace.iou[-1] > trace.iou[0] or trace.iou[0] == 1.0, name


def test_corrections_main_writes_its_tables_and_curve_and_resumes(tmp_path):
  pytest.importorskip("cv2")
  data = tmp_path / "data"
  os.makedirs(data / "images")
  os.makedirs(data / "masks")
  img, disc = synthetic(120, 160, r=30)
  Image.fromarray(img).save(data / "images" / "a.png")
  Image.fromarray(np.where(disc, 255, 0).astype(np.uint8)).save(data / "masks" / "a.png")
  out = tmp_path / "out"
  args = [f"--data_dir={data}", f"--out={out}", "--methods=grabcut", "--d_values=-4,6",
          "--max_clicks=3"]
  proc = cli("experiments.corrections", *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "noc.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["method"], r["d"]) for r in rows] == [("grabcut", "-4.0"), ("grabcut", "6.0")]
  for r in rows:
    assert 0 <= int(r["noc90"]) <= 3 and r["iou_4"] == ""
    assert all(0 <= float(r[f"iou_{k}"]) <= 1 for k in range(4))
  with open(out / "clicks.csv") as f:
    clicks = list(csv.DictReader(f))
  assert len(clicks) == 2 * 4 and {c["clicks"] for c in clicks} == {"0", "1", "2", "3"}
  assert {c["mode"] for c in clicks if c["clicks"] == "0"} == {""}
  summary = (out / "summary.md").read_text()
  assert "| grabcut |" in summary and "NoC@90" in summary and "IoU@3" in summary
  assert Image.open(out / "noc_curve.png").format == "PNG"
  assert "ETA" in proc.stderr
  # The same command again resumes: the image is done, nothing is added.
  again = cli("experiments.corrections", *args)
  assert again.returncode == 0 and "1 image(s) done" in again.stdout, again.stderr[-2000:]
  with open(out / "noc.csv") as f:
    assert list(csv.DictReader(f)) == rows
  # A run made before a config key existed resumes (the key counts as its default);
  # one made with another value is refused with one line.
  identity = json.loads((out / "run.json").read_text())
  del identity["config"]["snap_parts"]
  (out / "run.json").write_text(json.dumps(identity))
  assert cli("experiments.corrections", *args).returncode == 0
  identity["config"]["snap_parts"] = 3
  (out / "run.json").write_text(json.dumps(identity))
  refused = cli("experiments.corrections", *args)
  assert refused.returncode == 2 and "other flags or config" in refused.stderr
