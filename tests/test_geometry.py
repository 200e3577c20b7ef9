"""Distances, boundaries and components against brute-force definitions."""
import numpy as np
import pytest

from singleseg_jax import InputError, geometry


def _brute_edt(features):
  pts = np.argwhere(features)
  yy, xx = np.mgrid[:features.shape[0], :features.shape[1]]
  d = np.sqrt((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2)
  return d.min(-1)


def test_distance_transform_is_exact():
  rng = np.random.default_rng(0)
  for _ in range(10):
    f = rng.random((23, 31)) < 0.05
    f[rng.integers(23), rng.integers(31)] = True
    want = _brute_edt(f)
    np.testing.assert_allclose(geometry.distance_transform(f), want, atol=1e-12)
    for r in (0, 1, 1.5, np.sqrt(8), 4.2):
      np.testing.assert_array_equal(geometry.within_distance(f, r), want <= r + 1e-9)
  assert np.isinf(geometry.distance_transform(np.zeros((3, 4), bool))).all()
  with pytest.raises(InputError):
    geometry.within_distance(np.ones((2, 2), bool), -1)
  with pytest.raises(InputError):
    geometry.distance_transform(np.ones((2, 2, 2), bool))


def test_boundary_with_and_without_the_image_border():
  m = np.zeros((5, 6), bool)
  m[:, :3] = True  # cut by the border on three sides
  want = np.zeros_like(m)
  want[:, 2] = True  # the metrics' rule: only the column inside the image
  np.testing.assert_array_equal(geometry.boundary(m), want)
  drawn = geometry.boundary(m, image_border=True)  # drawing: the border pixels too
  want[0, :3] = want[-1, :3] = want[:, 0] = True
  np.testing.assert_array_equal(drawn, want)


def test_components_are_8_connected_in_raster_order():
  m = np.eye(12, dtype=bool) | np.eye(12, k=4, dtype=bool)  # two diagonals
  m[0, 11] = True  # a lone pixel, first met in row 0 after the first diagonal
  labels, n = geometry.label_components(m)
  assert n == 3 and labels.dtype == np.int32
  assert labels[0, 0] == 1 and labels[0, 4] == 2 and labels[0, 11] == 3
  assert (labels[np.eye(12, dtype=bool)] == 1).all()
  assert geometry.label_components(np.zeros((3, 3), bool))[1] == 0
