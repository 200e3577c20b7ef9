"""The evaluation: outline simulator, metrics, baselines, and the evaluate CLI end to end."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from singleseg_jax import InputError, geometry
from singleseg_jax.evaluation import baselines, metrics, outlines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _disc(h=100, w=100, cy=50, cx=45, r=25):
  yy, xx = np.mgrid[:h, :w]
  return (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2


def _brute_edt(features):
  pts = np.argwhere(features)
  yy, xx = np.mgrid[:features.shape[0], :features.shape[1]]
  d = np.sqrt((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2)
  return d.min(-1)


# ----------------------------------------------------------------------------- outlines


def test_offset_mask_dilates_and_erodes_by_euclidean_distance():
  one = np.zeros((15, 15), bool)
  one[7, 7] = True
  grown = outlines.offset_mask(one, 2)
  np.testing.assert_array_equal(grown, _brute_edt(one) <= 2)
  assert grown.sum() == 13  # the digital disc of radius 2
  square = np.zeros((20, 20), bool)
  square[5:15, 5:15] = True
  np.testing.assert_array_equal(outlines.offset_mask(square, -2), np.pad(np.ones((6, 6), bool), 7))
  np.testing.assert_array_equal(outlines.offset_mask(square, 0), square)
  # The image border is not background: an object cut by the crop keeps its edge there.
  edge = np.zeros((10, 10), bool)
  edge[:, :4] = True
  assert outlines.offset_mask(edge, -1)[:, 0].all()


def _fill_holes(comp):
  """The component plus the background that cannot reach the border 4-connectedly."""
  h, w = comp.shape
  outside = np.zeros_like(comp)
  stack = [(y, x) for y in range(h) for x in (0, w - 1)] + [(y, x) for x in range(w)
                                                              for y in (0, h - 1)]
  while stack:
    y, x = stack.pop()
    if 0 <= y < h and 0 <= x < w and not comp[y, x] and not outside[y, x]:
      outside[y, x] = True
      stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
  return ~outside


@pytest.mark.parametrize("shape", ["disc", "blobs", "ring", "diagonal"])
def test_full_trace_fills_back_to_the_component(shape):
  rng = np.random.default_rng(1)
  if shape == "disc":
    m = _disc()
  elif shape == "blobs":
    m = rng.random((30, 30)) < 0.6
  elif shape == "ring":
    m = _disc(40, 40, 20, 20, 15) & ~_disc(40, 40, 20, 20, 6)
  else:  # pixels touching only at corners are one 8-connected component
    m = np.eye(12, dtype=bool) | np.eye(12, k=4, dtype=bool)
  labels, n = geometry.label_components(m)
  assert n == {"disc": 1, "ring": 1, "diagonal": 2}.get(shape, n)
  for lab in range(1, n + 1):
    comp = labels == lab
    filled = outlines.rasterise([outlines.trace_boundary(comp)], *m.shape)
    np.testing.assert_array_equal(filled, _fill_holes(comp))
  if shape == "ring":
    np.testing.assert_array_equal(filled, _disc(40, 40, 20, 20, 15))


def test_non_star_shape_is_traced_not_sampled_by_angle():
  u = np.zeros((60, 60), bool)  # a U: rays from the centroid cross its boundary 3 times
  u[10:50, 10:20] = u[10:50, 40:50] = u[40:50, 10:50] = True
  out = outlines.simulate_outline(u)
  np.testing.assert_array_equal(out.mask, u)
  assert not out.mask[10:40, 20:40].any()


def test_d0_sigma0_gives_ground_truth_back():
  disc = _disc()
  exact = outlines.simulate_outline(disc, 0, 0, None)
  np.testing.assert_array_equal(exact.mask, disc)
  sparse = outlines.simulate_outline(disc, 0, 0, 40, np.random.default_rng(0))
  assert metrics.iou(sparse.mask, disc) > 0.97  # only the chords between kept vertices


def test_outline_iou_falls_as_d_grows():
  disc = _disc()
  for sigma, k in ((0, None), (1.0, 24)):
    ious = {}
    for d in (-8, -4, -2, 0, 2, 4, 8):
      vals = [metrics.iou(outlines.simulate_outline(disc, d, sigma, k,
                                                    np.random.default_rng(s)).mask, disc)
              for s in range(3)]
      ious[d] = np.mean(vals)
    assert ious[0] > ious[2] > ious[4] > ious[8]
    assert ious[0] > ious[-2] > ious[-4] > ious[-8]
  grown = outlines.simulate_outline(disc, 4).mask
  assert grown.sum() > disc.sum() and (grown >= disc).all()


def test_simulator_is_reproducible_and_random_needs_rng():
  disc = _disc()
  a = outlines.simulate_outline(disc, 2, 2.0, 16, np.random.default_rng(5))
  b = outlines.simulate_outline(disc, 2, 2.0, 16, np.random.default_rng(5))
  c = outlines.simulate_outline(disc, 2, 2.0, 16, np.random.default_rng(6))
  np.testing.assert_array_equal(a.mask, b.mask)
  assert len(a.polygons) == 1 and a.polygons[0].shape == (16, 2)
  assert not np.array_equal(a.polygons[0], c.polygons[0])
  with pytest.raises(InputError, match="rng"):
    outlines.simulate_outline(disc, 0, 1.0, 16)
  with pytest.raises(InputError, match="leaves no object"):
    outlines.simulate_outline(_disc(r=3), -5)


def test_separate_parts_each_get_a_polygon():
  m = _disc(100, 100, 30, 30, 12) | _disc(100, 100, 70, 70, 15)
  out = outlines.simulate_outline(m, 0, 0, 30, np.random.default_rng(0))
  assert len(out.polygons) == 2 and sum(len(p) for p in out.polygons) >= 30
  assert metrics.iou(out.mask, m) > 0.9


def test_resample_closed_spacing():
  square = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)
  pts = outlines.resample_closed(square, 8)
  np.testing.assert_allclose(pts, [[0, 0], [2, 0], [4, 0], [4, 2], [4, 4], [2, 4], [0, 4], [0, 2]])
  shifted = outlines.resample_closed(square, 4, phase=0.125)
  np.testing.assert_allclose(shifted, [[2, 0], [4, 2], [2, 4], [0, 2]])


# ----------------------------------------------------------------------------- metrics


def test_iou_hand_computed_with_ignore_band():
  gt = np.array([[1, 1, 0, 0]] * 2, bool)
  pred = np.array([[1, 1, 1, 0]] * 2, bool)
  assert metrics.iou(pred, gt) == pytest.approx(4 / 6)
  ignore = np.array([[0, 0, 1, 0]] * 2, bool)  # the disputed column is not counted
  assert metrics.iou(pred, gt, ignore) == 1.0
  ignore2 = np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool)
  assert metrics.iou(pred, gt, ignore2) == pytest.approx(3 / 5)
  assert metrics.iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
  assert metrics.iou(np.ones((2, 2)), np.zeros((2, 2))) == 0.0


def test_boundary_fscore_hand_computed():
  gt = np.zeros((20, 20), bool)
  gt[5:15, 5:15] = True  # boundary: 36 pixels (the square's ring)
  assert geometry.boundary(gt).sum() == 36
  assert metrics.boundary_fscore(gt, gt, tolerance=0).f == 1.0
  shifted = np.roll(gt, 3, axis=1)  # 3 px to the right
  s1 = metrics.boundary_fscore(shifted, gt, tolerance=1)
  # Pred ring: columns x=8 and x=17 (y 5..14) and rows y=5, y=14 (x 9..16); gt ring:
  # columns 5, 14 and rows 5, 14 (x 6..13). Within 1 px of the gt ring: on column 8 only
  # y = 5, 6, 13, 14 (4 of 10: the gt rows are 0 or 1 away; column 5 is 3 away); none
  # of column 17 (3 away); on each row x = 9..15 (7 of 8). 18 / 36; symmetric for recall.
  assert s1.precision == pytest.approx(0.5) and s1.recall == pytest.approx(0.5)
  assert s1.f == pytest.approx(0.5)
  s2 = metrics.boundary_fscore(shifted, gt, tolerance=2)  # adds y = 7, 12 and x = 16
  assert s2.precision == pytest.approx(22 / 36)
  assert metrics.boundary_fscore(shifted, gt, tolerance=3).f == 1.0
  assert metrics.boundary_fscore(np.zeros_like(gt), gt).f == 0.0
  assert metrics.boundary_fscore(np.zeros_like(gt), np.zeros_like(gt)).f == 1.0


def test_boundary_fscore_band_accepts_any_boundary_inside_it():
  gt = np.zeros((30, 30), bool)
  gt[8:22, 8:22] = True
  band = np.zeros_like(gt)
  band[5:25, 5:25] = True
  band[11:19, 11:19] = False  # a 6-pixel band straddling gt's edge (5..10 and 19..24)
  obj = gt & ~band
  for side in (5, 7, 10):  # pred boundaries anywhere in the band (rows 10, 8, 5)
    lo, hi = 15 - side, 15 + side
    pred = np.zeros_like(gt)
    pred[lo:hi, lo:hi] = True
    assert metrics.boundary_fscore(pred, obj, band, tolerance=0).f == 1.0
  far = np.zeros_like(gt)
  far[1:29, 1:29] = True
  assert metrics.boundary_fscore(far, obj, band, tolerance=1).f < 0.5


def test_labels_split_and_downsample():
  m = np.zeros((200, 200), np.uint8)
  m[40:160, 40:160] = 255
  m[36:44, 36:164] = 128
  labels = metrics.split_labels(m)
  assert labels.object.sum() == 120 * 116 and labels.ignore.sum() == 8 * 128
  small = metrics.downsample_labels(labels, 100)
  assert small.object.shape == (100, 100)
  assert small.ignore[18:22, 30:50].all() and not small.ignore[50].any()
  assert small.object[30:70, 30:70].all() and not small.object[:15].any()
  resolved = metrics.resolve_band(small)
  assert (resolved >= small.object).all() and (resolved & small.ignore).any()


# ----------------------------------------------------------------------------- baselines


def _synthetic(h=100, w=100, r=25, seed=0):
  """A saturated disc on a textured, differently coloured background."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  img = np.stack([30 + 0.3 * xx, 90 + 0.3 * yy, 160 + 0 * xx], -1) + rng.normal(0, 6, (h, w, 3))
  disc = _disc(h, w, h // 2, w // 2, r)
  img[disc] = [230, 190, 30] + rng.normal(0, 6, (disc.sum(), 3))
  return np.clip(img, 0, 255).astype(np.uint8), disc


def test_outline_baseline_is_the_outline():
  m = _disc()
  got = baselines.outline_answer(m)
  np.testing.assert_array_equal(got, m)
  assert got is not m


def test_thumbnail_roundtrip_known_answers():
  blocks = np.zeros((100, 100), bool)
  blocks[20:60, 30:70] = True  # aligned to the 10x10 blocks: comes back exactly
  np.testing.assert_array_equal(baselines.thumbnail_roundtrip(blocks, upsample="nearest"), blocks)
  assert metrics.iou(baselines.thumbnail_roundtrip(blocks, upsample="bicubic"), blocks) > 0.95
  # A sloppy version inside the same blocks gives the same answer: the paper's mechanism.
  sloppy = np.zeros((100, 100), bool)
  sloppy[22:58, 27:71] = True
  np.testing.assert_array_equal(baselines.thumbnail_roundtrip(sloppy), blocks)
  assert baselines.thumbnail_of(sloppy).shape == (10, 10)
  with pytest.raises(InputError, match="upsample"):
    baselines.thumbnail_roundtrip(blocks, upsample="linear")


def test_thumbnail_matches_segment_input():
  jax = pytest.importorskip("jax")
  from flax import nnx
  import singleseg_jax as ss
  img, disc = _synthetic()
  model = ss.Upsampler(4, 0.125, rngs=nnx.Rngs(0))
  outline = outlines.simulate_outline(disc, 3, 2.0, 12, np.random.default_rng(0)).mask
  res = ss.segment(model, img, outline, jax.random.key(0))
  np.testing.assert_array_equal(baselines.thumbnail_of(outline), res.outline_small)


def test_grabcut_plain_and_trimap_on_a_known_image():
  pytest.importorskip("cv2")
  for size in (100, 240):
    img, disc = _synthetic(size, size, r=size // 4)
    loose = outlines.offset_mask(disc, size // 12)
    got = baselines.grabcut(img, loose)
    assert metrics.iou(got, disc) > 0.95, size
    assert not (got & ~loose).any()  # plain: outside the outline is background
  img, disc = _synthetic(240, 240, r=60)
  tight = outlines.offset_mask(disc, -3)  # inside the object: plain GrabCut cannot grow
  plain = baselines.grabcut(img, tight)
  trimap = baselines.grabcut(img, tight, band=5)
  assert metrics.iou(plain, disc) <= metrics.iou(tight, disc) + 1e-9
  assert metrics.iou(trimap, disc) > 0.95 > metrics.iou(plain, disc)
  np.testing.assert_array_equal(trimap, baselines.grabcut(img, tight, band=5))  # repeatable
  init = baselines.grabcut_init(tight, band=5)
  import cv2
  ring = geometry.within_distance(tight, 5) & ~tight
  assert (init[ring] == cv2.GC_PR_BGD).all() and (init[tight] == cv2.GC_PR_FGD).all()
  assert (init[~tight & ~ring] == cv2.GC_BGD).all()
  # Nothing to learn the background from: the outline comes back.
  everything = np.ones((240, 240), bool)
  assert baselines.grabcut_degenerate(baselines.grabcut_init(everything))
  np.testing.assert_array_equal(baselines.grabcut(img, everything), everything)


def test_union_grabcut_lets_the_net_extend_a_tight_outline():
  pytest.importorskip("cv2")
  img, disc = _synthetic(240, 240, r=60)
  tight = outlines.offset_mask(disc, -20)  # far inside: the 5-px band cannot reach out
  net = outlines.offset_mask(disc, 2)      # a net that saw the object go on
  alone = baselines.grabcut(img, tight, band=5)
  union = baselines.union_grabcut(img, tight, net, band=5)
  assert metrics.iou(alone, disc) < 0.8 < 0.95 < metrics.iou(union, disc)
  np.testing.assert_array_equal(union, baselines.grabcut(img, tight | net, band=5))
  # An empty net mask leaves the trimap baseline.
  np.testing.assert_array_equal(baselines.union_grabcut(img, tight, np.zeros_like(tight), band=5), alone)


def test_grabcut_without_opencv_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "cv2", None)
  with pytest.raises(InputError, match=r"singleseg-jax\[eval\]"):
    baselines.grabcut(np.zeros((10, 10, 3), np.uint8), np.ones((10, 10), bool))


# ----------------------------------------------------------------------------- the CLI


def _write_set(root):
  """Two synthetic photos, one whose centre crop has almost no object, one unreadable
  pair (mask of the wrong size) and one image without a mask."""
  os.makedirs(root / "images")
  os.makedirs(root / "masks")

  def save(name, img, mask, ext="png"):
    Image.fromarray(img).save(root / "images" / f"{name}.{ext}")
    if mask is not None:
      Image.fromarray(mask).save(root / "masks" / f"{name}.png")

  img, disc = _synthetic(120, 160, r=30)
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
      [sys.executable, "-m", "experiments.evaluate", "--config=experiments/configs/runlocal.py",
       "--config.num_epochs=2", f"--data_dir={data}", f"--out={out}", "--d_values=-3,0,4",
       "--sigmas=0,1.5", "--vertices=16", "--seeds=1"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for name in ("results.csv", "images.csv", "summary.md", "iou_vs_error.png", "skipped.txt"):
    assert os.path.exists(out / name), name
  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  methods = {"net", "outline", "thumbnail_nearest", "thumbnail_bicubic", "grabcut_100",
             "grabcut_full", "grabcut_trimap_full", "net_grabcut_full", "union_grabcut_full"}
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
    status = {r["image"]: r["status"] for r in csv.DictReader(f)}
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
      [sys.executable, "-m", "experiments.evaluate", "--config=experiments/configs/runlocal.py",
       f"--data_dir={tmp_path}", f"--out={tmp_path / 'o'}", "--methods=outline"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr.strip().startswith("error:")
  assert "no images/ directory" in proc.stderr
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--config=experiments/configs/runlocal.py",
       f"--data_dir={tmp_path}", f"--out={tmp_path / 'o'}", "--methods=net_grabcut_full,net"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "needs net listed before it" in proc.stderr
