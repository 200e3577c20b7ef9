"""The sloppy-outline simulator: offsets, traces, resampling, jitter."""
import numpy as np
import pytest

from helpers import disc
from singleseg_jax import InputError, geometry
from singleseg_jax.evaluation import metrics, outlines


def test_offset_mask_dilates_and_erodes_by_euclidean_distance():
  one = np.zeros((15, 15), bool)
  one[7, 7] = True
  grown = outlines.offset_mask(one, 2)
  np.testing.assert_array_equal(grown, geometry.distance_transform(one) <= 2)
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
    m = disc()
  elif shape == "blobs":
    m = rng.random((30, 30)) < 0.6
  elif shape == "ring":
    m = disc(40, 40, 20, 20, 15) & ~disc(40, 40, 20, 20, 6)
  else:  # pixels touching only at corners are one 8-connected component
    m = np.eye(12, dtype=bool) | np.eye(12, k=4, dtype=bool)
  labels, n = geometry.label_components(m)
  assert n == {"disc": 1, "ring": 1, "diagonal": 2}.get(shape, n)
  for lab in range(1, n + 1):
    comp = labels == lab
    filled = outlines.rasterise([outlines.trace_boundary(comp)], *m.shape)
    np.testing.assert_array_equal(filled, _fill_holes(comp))
  if shape == "ring":
    np.testing.assert_array_equal(filled, disc(40, 40, 20, 20, 15))


def test_non_star_shape_is_traced_not_sampled_by_angle():
  u = np.zeros((60, 60), bool)  # a U: rays from the centroid cross its boundary 3 times
  u[10:50, 10:20] = u[10:50, 40:50] = u[40:50, 10:50] = True
  out = outlines.simulate_outline(u)
  np.testing.assert_array_equal(out.mask, u)
  assert not out.mask[10:40, 20:40].any()


def test_d0_sigma0_gives_ground_truth_back():
  m = disc()
  exact = outlines.simulate_outline(m, 0, 0, None)
  np.testing.assert_array_equal(exact.mask, m)
  sparse = outlines.simulate_outline(m, 0, 0, 40, np.random.default_rng(0))
  assert metrics.iou(sparse.mask, m) > 0.97  # only the chords between kept vertices


def test_outline_iou_falls_as_d_grows():
  m = disc()
  for sigma, k in ((0, None), (1.0, 24)):
    ious = {}
    for d in (-8, -4, -2, 0, 2, 4, 8):
      vals = [metrics.iou(outlines.simulate_outline(m, d, sigma, k,
                                                    np.random.default_rng(s)).mask, m)
              for s in range(3)]
      ious[d] = np.mean(vals)
    assert ious[0] > ious[2] > ious[4] > ious[8]
    assert ious[0] > ious[-2] > ious[-4] > ious[-8]
  grown = outlines.simulate_outline(m, 4).mask
  assert grown.sum() > m.sum() and (grown >= m).all()


def test_simulator_is_reproducible_and_random_needs_rng():
  m = disc()
  a = outlines.simulate_outline(m, 2, 2.0, 16, np.random.default_rng(5))
  b = outlines.simulate_outline(m, 2, 2.0, 16, np.random.default_rng(5))
  c = outlines.simulate_outline(m, 2, 2.0, 16, np.random.default_rng(6))
  np.testing.assert_array_equal(a.mask, b.mask)
  assert len(a.polygons) == 1 and a.polygons[0].shape == (16, 2)
  assert not np.array_equal(a.polygons[0], c.polygons[0])
  with pytest.raises(InputError, match="rng"):
    outlines.simulate_outline(m, 0, 1.0, 16)
  with pytest.raises(InputError, match="leaves no object"):
    outlines.simulate_outline(disc(r=3), -5)


def test_separate_parts_each_get_a_polygon():
  m = disc(100, 100, 30, 30, 12) | disc(100, 100, 70, 70, 15)
  out = outlines.simulate_outline(m, 0, 0, 30, np.random.default_rng(0))
  assert len(out.polygons) == 2 and sum(len(p) for p in out.polygons) >= 30
  assert metrics.iou(out.mask, m) > 0.9


def test_resample_closed_spacing():
  square = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)
  pts = outlines.resample_closed(square, 8)
  np.testing.assert_allclose(pts, [[0, 0], [2, 0], [4, 0], [4, 2], [4, 4], [2, 4], [0, 4], [0, 2]])
  shifted = outlines.resample_closed(square, 4, phase=0.125)
  np.testing.assert_allclose(shifted, [[2, 0], [4, 2], [2, 4], [0, 2]])
