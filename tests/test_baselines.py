"""The baselines: the outline, the thumbnail round trip, GrabCut and the hybrid."""
import sys

import numpy as np
import pytest

from helpers import disc, synthetic
from singleseg_jax import InputError, geometry
from singleseg_jax.evaluation import baselines, metrics, outlines


def test_outline_baseline_is_the_outline():
  m = disc()
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
  img, disc = synthetic()
  model = ss.Upsampler(4, 0.125, rngs=nnx.Rngs(0))
  outline = outlines.simulate_outline(disc, 3, 2.0, 12, np.random.default_rng(0)).mask
  res = ss.segment(model, img, outline, jax.random.key(0))
  np.testing.assert_array_equal(baselines.thumbnail_of(outline), res.outline_small)


def test_grabcut_plain_and_trimap_on_a_known_image():
  pytest.importorskip("cv2")
  for size in (100, 240):
    img, disc = synthetic(size, size, r=size // 4)
    loose = outlines.offset_mask(disc, size // 12)
    got = baselines.grabcut(img, loose)
    assert metrics.iou(got, disc) > 0.95, size
    assert not (got & ~loose).any()  # plain: outside the outline is background
  img, disc = synthetic(240, 240, r=60)
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
  img, disc = synthetic(240, 240, r=60)
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
