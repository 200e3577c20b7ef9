"""IoU and boundary F with the ignore band, and the ground truth at two scales."""
import numpy as np
import pytest

from singleseg_jax import geometry
from singleseg_jax.evaluation import metrics


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
