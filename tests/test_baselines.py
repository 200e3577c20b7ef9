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


def test_edge_band_grabcut_keeps_unlike_parts_and_fixes_only_edges():
  """The net's deep interior stays, even a part coloured like the background, which
  the union hybrid drops; its boundary moves to the object's, but never past the band."""
  pytest.importorskip("cv2")
  img, obj = synthetic(240, 240, r=60)
  yy, xx = np.mgrid[:240, :240]
  part = obj & (np.abs(yy - 120) < 12) & (np.abs(xx - 120) < 30)  # a stripe of the object
  img[part] = img[~obj][:part.sum()]                              # in the background's colours
  net = outlines.offset_mask(obj, 6)   # the right selection, its edge 6 px off
  got = baselines.edge_band_grabcut(img, net, band=10)
  assert got[part].all() and metrics.iou(got, obj) > 0.97 > metrics.iou(net, obj)
  assert not (got & ~geometry.within_distance(net, 10)).any()
  assert got[net & ~geometry.within_distance(~net, 10)].all()
  union = baselines.union_grabcut(img, net, net, band=10)
  assert union[part].mean() < 0.5 and metrics.iou(union, obj) < metrics.iou(got, obj)
  np.testing.assert_array_equal(baselines.edge_band_grabcut(img, net, band=0), net)


def test_outline_offset_finds_the_edge_and_grabcut_grown_uses_it():
  pytest.importorskip("cv2")
  img, obj = synthetic(100, 100, r=25)
  for d in (-6, -4, 0, 3, 6, 10):
    assert abs(baselines.outline_offset(img, outlines.offset_mask(obj, d)) - d) <= 1, d
  # An outline far inside: the trimap band cannot reach the edge; grown by the estimate
  # (made on the 100x100 view, applied at full size) it can. Never shrunk: an outline
  # outside is left to the band.
  big, big_obj = synthetic(300, 300, r=75)
  inside = outlines.offset_mask(big_obj, -18)
  grown = baselines.grabcut_grown(big, inside, outlines.offset_mask(obj, -6), img, band=15)
  assert metrics.iou(grown, big_obj) > 0.95 > 0.8 > metrics.iou(baselines.grabcut(big, inside, band=15), big_obj)
  loose = outlines.offset_mask(big_obj, 9)
  np.testing.assert_array_equal(
      baselines.grabcut_grown(big, loose, outlines.offset_mask(obj, 3), img, band=15),
      baselines.grabcut(big, loose, band=15))


def test_superpixel_vote_takes_what_the_outline_mostly_covers():
  labels = np.repeat(np.repeat(np.arange(4).reshape(2, 2), 10, 0), 10, 1)  # four 10x10
  outline = np.zeros((20, 20), bool)
  outline[:10, :6] = True    # 60% of superpixel 0
  outline[10:, 10:14] = True  # 40% of superpixel 3
  want = labels == 0
  np.testing.assert_array_equal(baselines.superpixel_vote(labels, outline), want)
  with pytest.raises(InputError, match="do not fit"):
    baselines.superpixel_vote(labels[:10], outline)


def test_grabcut_without_opencv_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "cv2", None)
  with pytest.raises(InputError, match=r"singleseg-jax\[eval\]"):
    baselines.grabcut(np.zeros((10, 10, 3), np.uint8), np.ones((10, 10), bool))
