"""Self-generated regions and sloppy outlines (singleseg_jax.regions)."""
from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import singleseg_jax as ss
from singleseg_jax import geometry as O
from singleseg_jax.snap import regions as R


def _shape_mask():
  m = np.zeros((60, 70), bool)
  m[10:35, 15:50] = True
  m[30:55, 5:25] = True
  m[20:25, 30:35] = False  # a hole
  return m


def _connected(mask) -> bool:
  """True when the True pixels of `mask` form one 4-connected piece."""
  pts = list(zip(*np.nonzero(mask)))
  seen, queue = {pts[0]}, deque([pts[0]])
  while queue:
    y, x = queue.popleft()
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
      p = (y + dy, x + dx)
      if 0 <= p[0] < mask.shape[0] and 0 <= p[1] < mask.shape[1] and mask[p] and p not in seen:
        seen.add(p)
        queue.append(p)
  return len(seen) == len(pts)


@pytest.fixture(scope="module")
def image(photo):
  return ss.prepare_image(photo, 100, 0.1, "center").image


@pytest.fixture(scope="module")
def sp(image):
  return jax.jit(R.superpixels, static_argnums=1)(jnp.asarray(image, jnp.float32), 100)


@pytest.mark.parametrize("cap", [200, 7])
def test_distance_to_is_the_exact_edt_clipped(cap):
  m = _shape_mask()
  want = np.minimum(O.distance_transform(m), cap)
  got = np.asarray(R.distance_to(jnp.asarray(m), cap))
  np.testing.assert_allclose(got, want, atol=1e-4)
  batched = np.asarray(R.distance_to(jnp.stack([jnp.asarray(m), ~jnp.asarray(m)]), cap))
  np.testing.assert_allclose(batched[0], want, atol=1e-4)


@pytest.mark.parametrize("d", [-4, -1, 0, 2, 5])
def test_signed_distance_offsets_match_exact_dilation_and_erosion(d):
  m = _shape_mask()
  sdf = np.asarray(R.signed_distance(jnp.asarray(m), 16.0))
  assert (sdf[m] < 0).all() and (sdf[~m] > 0).all()
  if d > 0:
    want = O.within_distance(m, d + 0.5 - 1e-6)
  else:
    want = m & ~O.within_distance(~m, -d + 0.5 + 1e-6)
  np.testing.assert_array_equal(sdf < d, want)


def test_connect_keeps_each_label_on_one_piece():
  labels = np.array([[0, 0, 1, 1], [0, 1, 1, 0], [2, 2, 1, 1], [2, 0, 0, 1]])
  got = np.asarray(R.connect(jnp.asarray(labels)))
  for k in np.unique(got):
    assert _connected(got == k), (k, got)
  assert (got[:2, :2] == [[0, 0], [0, 1]]).all()  # the largest piece keeps its label


def test_superpixels_are_connected_and_consistent(sp, image):
  labels = np.asarray(sp.labels)
  k = sp.area.shape[0]
  assert labels.shape == (100, 100) and labels.min() >= 0 and labels.max() < k
  np.testing.assert_allclose(np.asarray(sp.area).sum(), 100 * 100)
  present = np.unique(labels)
  assert len(present) > 0.7 * k
  for j in present:
    assert _connected(labels == j), j
  adj = np.asarray(sp.adjacency)
  assert (adj == adj.T).all() and not adj.diagonal().any()
  assert adj[labels[0, 0], labels[0, 1]] or labels[0, 0] == labels[0, 1]
  # The disc's border is an edge: few superpixels straddle it.
  yy, xx = np.mgrid[:100, :100]
  side = 120  # centre crop of the 120x160 photo, disc at (55, 50-20) radius 30
  disc = (yy * side / 100 - 55) ** 2 + (xx * side / 100 + 20 - 50) ** 2 < 30 ** 2
  mixed = [j for j in present if 0.1 < disc[labels == j].mean() < 0.9]
  assert len(mixed) <= 0.1 * len(present)


@pytest.mark.parametrize("parts", [1, 3])
def test_sample_region_is_a_hole_free_union_of_superpixels(sp, parts):
  prior = R.RegionPrior(parts=parts)
  keys = jax.random.split(jax.random.key(0), 64)
  regs = np.asarray(jax.jit(jax.vmap(lambda k: R.sample_region(k, sp, prior)))(keys))
  labels = np.asarray(sp.labels)
  areas = regs.mean(axis=(1, 2))
  assert areas.min() > 0 and areas.max() < prior.max_area + 0.25
  assert np.std(areas) > 0.05  # sizes vary
  for reg in regs[:16]:
    for j in np.unique(labels):
      inside = reg[labels == j]
      assert inside.all() or not inside.any()  # whole superpixels only
    assert _connected(reg)
    outside = ~reg
    if outside.any():  # every background pixel reaches the border through background
      border = np.zeros_like(outside)
      border[[0, -1], :] = border[:, [0, -1]] = True
      grown = O.within_distance(outside & border, 0)
      seen = grown & outside
      for _ in range(200):
        nxt = outside & O.within_distance(seen, 1)
        if (nxt == seen).all():
          break
        seen = nxt
      assert (seen == outside).all()
  again = np.asarray(R.sample_region(keys[3], sp, prior))
  np.testing.assert_array_equal(again, regs[3])


def test_sample_region_joins_up_to_parts_seeds(sp):
  # With a near-zero colour tolerance a part cannot grow past its seed, so a region's
  # superpixel count is its number of parts (uniform in 1..parts, mean 2 for parts=3)
  # plus any superpixel that one encloses (holes are filled).
  labels = np.asarray(sp.labels)
  keys = jax.random.split(jax.random.key(5), 48)
  counts = {}
  for parts in (1, 3):
    prior = R.RegionPrior(parts=parts, min_tolerance=1e-6, max_tolerance=2e-6)
    regs = np.asarray(jax.jit(jax.vmap(lambda k, p=prior: R.sample_region(k, sp, p)))(keys))
    counts[parts] = [len(np.unique(labels[r])) for r in regs]
  assert np.median(counts[1]) == 1 and {1, 2, 3} <= set(counts[3])
  assert np.mean(counts[3]) - np.mean(counts[1]) > 0.6


def test_sloppy_outline_offsets_and_wobble(sp):
  region = R.sample_region(jax.random.key(1), sp)
  exact = R.RegionPrior(min_offset=0.0, max_offset=0.0, max_wobble=0.0)
  np.testing.assert_array_equal(np.asarray(R.sloppy_outline(jax.random.key(2), region, exact)),
                                np.asarray(region))
  grown = R.RegionPrior(min_offset=3.0, max_offset=3.0, max_wobble=0.0)
  out = np.asarray(R.sloppy_outline(jax.random.key(2), region, grown))
  np.testing.assert_array_equal(out, np.asarray(R.signed_distance(region, 20.0)) < 3.0)
  assert out[np.asarray(region)].all() and out.sum() > np.asarray(region).sum()
  shrink_all = R.RegionPrior(min_offset=-90.0, max_offset=-90.0, max_wobble=0.0)
  never_empty = np.asarray(R.sloppy_outline(jax.random.key(2), region, shrink_all))
  np.testing.assert_array_equal(never_empty, np.asarray(region))
  outs = np.asarray(jax.vmap(lambda k: R.sloppy_outline(k, region))(
      jax.random.split(jax.random.key(5), 32)))
  ious = (outs & np.asarray(region)).sum((1, 2)) / (outs | np.asarray(region)).sum((1, 2))
  assert 0.3 < ious.mean() < 0.95 and ious.std() > 0.03  # sloppy, not exact, not wild
