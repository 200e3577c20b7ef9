"""The JAX sampler against a literal NumPy port of the seed's get_mask.m."""
import jax
import numpy as np
import pytest

from singleseg_jax import InputError, sample_mask, sample_masks

N = 4000


def _int8(x):  # MATLAB int8(): round half away from zero (saturation irrelevant here)
  return int(np.floor(x + 0.5))


def matlab_get_mask(rng, h, w):
  """Line-by-line port of get_mask.m (1-based indices kept, converted at the end)."""
  randi = lambda lo, hi: int(rng.integers(lo, hi + 1))
  if randi(1, 2) == 1:
    y = randi(1, _int8(h * 3 / 4)); x = randi(1, _int8(w * 3 / 4))
    dh = randi(_int8((h - y) * 3 / 4), h - y) if y != h else 0
    dw = randi(_int8((w - x) * 3 / 4), w - x) if x != w else 0
    m = np.zeros((h, w), bool); m[y - 1:y + dh, x - 1:x + dw] = True
    return m, "rect"
  yc = randi(_int8(h / 4), _int8(h * 3 / 4)); xc = randi(_int8(w / 4), _int8(w * 3 / 4))
  d = min(xc, w - xc, yc, h - yc)
  r = randi(_int8(d * 3 / 4), d)
  gy, gx = np.meshgrid(np.arange(1, h + 1) - yc, np.arange(1, w + 1) - xc, indexing="ij")
  return gy ** 2 + gx ** 2 < r ** 2, "disc"


def _is_rectangle(m):
  rows, cols = np.where(m.any(1))[0], np.where(m.any(0))[0]
  if not len(rows):
    return False
  return m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and m.sum() == len(rows) * len(cols)


@pytest.fixture(scope="module")
def jax_masks():
  return np.asarray(jax.jit(sample_masks, static_argnums=(1, 2, 3))(jax.random.key(0), N, 100, 100))


@pytest.fixture(scope="module")
def ref_masks():
  rng = np.random.default_rng(0)
  return [matlab_get_mask(rng, 100, 100) for _ in range(N)]


def test_shape_dtype_and_determinism(jax_masks):
  assert jax_masks.shape == (N, 100, 100) and jax_masks.dtype == bool
  a = sample_mask(jax.random.key(3), 100, 100)
  b = sample_mask(jax.random.key(3), 100, 100)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rectangle_share_is_one_half(jax_masks):
  rect = np.mean([_is_rectangle(m) for m in jax_masks])
  # discs of radius >= 2 are never rectangles; tiny discs are rare (d >= 25 at 100x100).
  assert abs(rect - 0.5) < 4 * np.sqrt(0.25 / N)


def test_rectangle_corners_and_sizes_in_matlab_ranges(jax_masks):
  for m in jax_masks:
    if not _is_rectangle(m):
      continue
    rows, cols = np.where(m.any(1))[0], np.where(m.any(0))[0]
    y, x = rows[0] + 1, cols[0] + 1           # 1-based corner
    dh, dw = len(rows) - 1, len(cols) - 1
    assert 1 <= y <= 75 and 1 <= x <= 75
    assert _int8((100 - y) * 0.75) <= dh <= 100 - y
    assert _int8((100 - x) * 0.75) <= dw <= 100 - x


def test_discs_stay_inside_the_image_and_are_round(jax_masks):
  for m in jax_masks:
    if _is_rectangle(m):
      continue
    rows, cols = np.where(m.any(1))[0], np.where(m.any(0))[0]
    assert abs(len(rows) - len(cols)) <= 0  # symmetric about an integer centre
    # i - yc > -r >= -yc reaches 1-based row 1; the strict '<' never reaches row 100.
    assert rows[-1] <= 98 and cols[-1] <= 98


@pytest.mark.parametrize("kind", ["rect", "disc"])
def test_coverage_distribution_matches_the_matlab_port(jax_masks, ref_masks, kind):
  ours = np.array([m.mean() for m in jax_masks if _is_rectangle(m) == (kind == "rect")])
  theirs = np.array([m.mean() for m, k in ref_masks if k == kind])
  # Two-sample Kolmogorov-Smirnov statistic; critical value at alpha = 0.001 is
  # 1.95 * sqrt((n + m) / (n m)).
  grid = np.sort(np.concatenate([ours, theirs]))
  cdf = lambda s: np.searchsorted(np.sort(s), grid, side="right") / len(s)
  ks = np.max(np.abs(cdf(ours) - cdf(theirs)))
  assert ks < 1.95 * np.sqrt((len(ours) + len(theirs)) / (len(ours) * len(theirs)))
  assert ours.min() >= theirs.min() - 0.02 and ours.max() <= theirs.max() + 0.02


def test_coverage_range(jax_masks):
  cover = jax_masks.mean((1, 2))
  # Smallest rectangle: corner 75, dh >= int8(18.75) = 19 -> 20x20 pixels; smallest disc:
  # d = 25, radius >= 19 -> 1129 pixels. Largest: the whole image.
  assert cover.min() >= 0.04 - 1e-9
  assert cover.max() <= 1.0 and 0.2 < cover.mean() < 0.6


def test_other_sizes_and_vmap():
  m = sample_masks(jax.random.key(1), 64, 37, 53)
  assert m.shape == (64, 37, 53)
  assert all(np.asarray(m).reshape(64, -1).any(1)[: 10])
  tiny = sample_masks(jax.random.key(1), 16, 1, 1)
  assert tiny.shape == (16, 1, 1)
  with pytest.raises(InputError):
    sample_mask(jax.random.key(0), 0, 5)


def test_masks_scale_with_the_side():
  # The ranges are fractions of the side, so at 200x200 (config.size) the coverage is
  # distributed as at 100x100 (the seed's), by a two-sample KS test at alpha = 0.001.
  n = 1000
  small, big = (np.asarray(sample_masks(jax.random.key(k), n, s, s)).mean((1, 2))
                for k, s in ((3, 100), (4, 200)))
  grid = np.sort(np.concatenate([small, big]))
  cdf = lambda s: np.searchsorted(np.sort(s), grid, side="right") / n
  assert np.max(np.abs(cdf(small) - cdf(big))) < 1.95 * np.sqrt(2 / n)
  assert big.min() >= 0.04 - 1e-9  # the 100x100 bound, scale-free
