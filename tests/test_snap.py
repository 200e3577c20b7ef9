"""The snap variant (singleseg_jax.snap) and that the paper variant is unchanged."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import singleseg_jax as ss
from singleseg_jax import variants
from singleseg_jax.fit import FitOptions, fit, init_state
from singleseg_jax.snap import net as snap
from singleseg_jax.snap import regions

OPTIONS = FitOptions(variant="snap", num_samples=80, batch_size=32, num_epochs=12,
                     learning_rate=3e-3, snap_steps=10, snap_hidden=32, snap_rounds=2)


@pytest.fixture(scope="module")
def image(photo):
  return ss.prepare_image(photo, 100, 0.1, "center").image


@pytest.fixture(scope="module")
def disc():
  yy, xx = np.mgrid[:100, :100]
  return (yy * 1.2 - 55) ** 2 + (xx * 1.2 + 20 - 50) ** 2 < 30 ** 2


@pytest.fixture(scope="module")
def fitted(image):
  history = []
  state, _ = fit(jax.random.key(0), image, OPTIONS, on_epoch=history.append)
  return state, history


def test_node_features_see_the_outline(image, disc):
  graph, _ = variants.get("snap").fixed_data(jax.random.key(0), image, OPTIONS)
  nodes = snap.node_features(graph, jnp.asarray(disc))
  k = graph.area.shape[0]
  assert nodes.features.shape == (k, snap.NUM_FEATURES)
  assert np.isfinite(np.asarray(nodes.features)).all()
  cover = np.asarray(nodes.features[:, 0])
  labels = np.asarray(graph.labels)
  for j in np.unique(labels)[:20]:
    np.testing.assert_allclose(cover[j], disc[labels == j].mean(), atol=1e-5)
  np.testing.assert_allclose(float(nodes.inside.sum()), disc.sum(), rtol=1e-5)
  # With the offset estimate: the same features first, then three more. Of an outline
  # grown or shrunk by d, the estimate is d (the disc's edge is the strongest the outline
  # can be moved onto), so the moved outline's cover is the disc's own, and the deepest
  # superpixels read fully inside it.
  with_edges = snap.node_features(graph, jnp.asarray(disc), True)
  assert with_edges.features.shape == (k, snap.num_features(True))
  np.testing.assert_array_equal(with_edges.features[:, :snap.NUM_FEATURES], nodes.features)
  truth = np.array([disc[labels == j].mean() for j in range(k)])
  sdf = np.asarray(regions.signed_distance(jnp.asarray(disc), snap.EDGE_SDF_CAP))
  for d in (-6, -2, 0, 4, 10):
    outline = jnp.asarray(sdf < d)
    t, _ = snap.edge_offset_estimate(graph, regions.signed_distance(outline, snap.EDGE_SDF_CAP))
    assert float(t) == d
    f = np.asarray(snap.node_features(graph, outline, True).features)
    assert np.abs(f[:, snap.NUM_FEATURES] - truth).mean() < 0.02 and f[:, snap.NUM_FEATURES + 1].min() == -1
  flat, _ = variants.get("snap").fixed_data(jax.random.key(0), np.full_like(image, 120), OPTIONS)
  assert float(snap.edge_offset_estimate(flat, jnp.asarray(sdf))[0]) == 0  # no edges: no move


def test_snap_net_shapes_and_batch(image):
  graph, val = variants.get("snap").fixed_data(jax.random.key(0), image, OPTIONS)
  assert val.member.shape == (20, graph.area.shape[0])
  assert val.regions.shape == val.outlines.shape == (20, 100, 100)
  state = init_state(jax.random.key(0), OPTIONS)
  z = snap.logits(state.model(), graph, val.nodes)
  assert z.shape == val.member.shape
  p = snap.probability(state.model(), graph, val.outlines[:3])
  assert p.shape == (3, 100, 100) and float(p.min()) >= 0 and float(p.max()) <= 1


def test_snap_loss_falls_and_it_snaps_a_sloppy_outline_to_the_disc(fitted, image, disc):
  state, history = fitted
  assert [r["epoch"] for r in history] == list(range(1, 13))
  assert history[-1]["val_loss"] < 0.7 * history[0]["val_loss"]
  assert history[-1]["val_error"] < history[0]["val_error"]
  # Where the answer is known: a sloppy outline 6 px outside the disc.
  sdf = np.asarray(regions.signed_distance(jnp.asarray(disc), 20.0))
  outline = sdf < 6
  seg = ss.segment(state.train, image, outline, jax.random.key(0))
  iou = lambda a: (a & disc).sum() / (a | disc).sum()
  assert seg.probability.shape == (100, 100) and seg.output.shape == (100, 100, 3)
  np.testing.assert_array_equal(seg.mask, seg.probability > 0.5)
  assert iou(seg.mask) > iou(outline) + 0.05, (iou(seg.mask), iou(outline))
  both = ss.segment(state.train, image, np.stack([outline, disc]), jax.random.key(0))
  assert both.mask.shape == (2, 100, 100) and both.input_thumbnail.shape == (2, 100, 100, 3)
  np.testing.assert_array_equal(both.mask[0], seg.mask)


def test_snap_fit_resumes_to_the_same_params(image):
  short = FitOptions(**{**OPTIONS.__dict__, "num_epochs": 2, "snap_steps": 2})
  full, _ = fit(jax.random.key(4), image, short)
  half, _ = fit(jax.random.key(4), image, FitOptions(**{**short.__dict__, "num_epochs": 1}))
  resumed, _ = fit(jax.random.key(4), image, short, resume=half)
  for a, b in zip(jax.tree.leaves(full.train.params), jax.tree.leaves(resumed.train.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("field,value", [("variant", "unet"), ("snap_segments", 0),
                                         ("snap_rounds", -1), ("snap_steps", 1.5),
                                         ("snap_parts", 0), ("snap_edge_offset", 1)])
def test_bad_snap_options_are_input_errors(field, value):
  with pytest.raises(ss.InputError, match=field.split("_")[0]):
    FitOptions(**{field: value})


def test_paper_variant_is_unchanged_by_the_snap_code():
  """Numbers recorded with the code before the snap variant existed (commit 67bf083):
  the same key and options give the same fit and the same segmentation."""
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
  opt = FitOptions(in_channels=8, width=0.125, num_samples=20, batch_size=5, num_epochs=2)
  state, _ = fit(jax.random.key(3), img, opt)
  outline = np.zeros((100, 100), bool)
  outline[20:70, 30:90] = True
  seg = ss.segment(state.train, img, outline, jax.random.key(1))
  assert seg.probability is None
  np.testing.assert_allclose(float(np.asarray(seg.output, np.float64).sum()),
                             14954.985976219177, rtol=1e-5)
  np.testing.assert_allclose(state.plateau.best, 3302.617919921875, rtol=1e-5)


@pytest.mark.parametrize("segments,hidden,rounds,edge_offset",
                         [(49, 8, 0, False), (144, 16, 2, True)])
def test_each_snap_switch_builds_and_trains(image, segments, hidden, rounds, edge_offset):
  opts = FitOptions(**{**OPTIONS.__dict__, "snap_segments": segments, "snap_hidden": hidden,
                       "snap_rounds": rounds, "snap_steps": 2, "num_epochs": 1,
                       "batch_size": 8, "snap_edge_offset": edge_offset})
  graph, val = variants.get("snap").fixed_data(jax.random.key(0), image, opts)
  assert graph.area.shape == (segments,) and graph.colour_kernels.shape[1:] == (segments,) * 2
  state = init_state(jax.random.key(0), opts)
  before = jax.tree.map(np.asarray, state.params)
  assert val.nodes.features.shape[-1] == snap.num_features(edge_offset)
  state, m = snap.region_epoch(state, graph, jax.random.key(1), steps=2, batch_size=8)
  assert int(state.step) == 2 and np.isfinite(float(m["loss"]))
  changed = [not np.allclose(a, np.asarray(b)) for a, b in
             zip(jax.tree.leaves(before), jax.tree.leaves(state.params))]
  assert all(changed)
  p = snap.probability(state.model(), graph, val.outlines[:2])
  assert p.shape == (2, 100, 100)
