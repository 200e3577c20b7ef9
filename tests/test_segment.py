import jax
import numpy as np
import pytest
from flax import nnx

from singleseg_jax import (InputError, TrainState, Upsampler, make_optimizer, mask_from_output,
                           polygon_mask, prepare_image, segment)


@pytest.fixture(scope="module")
def setup(photo):
  prep = prepare_image(photo)
  model = Upsampler(8, 0.125, rngs=nnx.Rngs(0))
  return prep, model


def test_segment_shapes_and_ranges(setup):
  prep, model = setup
  outline = polygon_mask([[20, 20], [80, 25], [75, 85], [15, 70]], 100, 100)
  res = segment(model, prep.image, outline, jax.random.key(0))
  assert res.output.shape == (100, 100, 3) and res.mask.shape == (100, 100)
  assert res.mask.dtype == bool and 0 <= res.output.min() and res.output.max() <= 1
  assert res.input_thumbnail.shape == (10, 10, 3) and res.input_thumbnail.dtype == np.uint8
  assert res.outline_small.shape == (10, 10)
  # The thumbnail outside the 10x10 outline is black, inside it is the thumbnail.
  inside = res.outline_small
  np.testing.assert_array_equal(res.input_thumbnail[~inside], 0)
  np.testing.assert_array_equal(res.input_thumbnail[inside], prep.thumbnail[inside])


def test_outline_acts_at_thumbnail_resolution(setup):
  prep, model = setup
  box = np.zeros((100, 100), bool); box[20:80, 20:80] = True
  nudged = np.zeros((100, 100), bool); nudged[22:79, 21:82] = True  # a sloppier box
  a = segment(model, prep.image, box, jax.random.key(0))
  b = segment(model, prep.image, nudged, jax.random.key(0))
  np.testing.assert_array_equal(a.outline_small, b.outline_small)
  np.testing.assert_array_equal(a.output, b.output)


def test_several_outlines_and_a_train_state(setup):
  prep, model = setup
  outlines = np.zeros((3, 100, 100), bool)
  outlines[0, :50, :50] = outlines[1, 50:, 50:] = outlines[2] = True
  state = TrainState.create(model, make_optimizer())
  res = segment(state, prep.image, outlines, jax.random.key(1))
  assert res.output.shape == (3, 100, 100, 3) and res.mask.shape == (3, 100, 100)


def test_mask_from_output():
  img = np.full((2, 2, 3), 0.8, np.float32)
  out = np.array([[[0.8] * 3, [0.0] * 3], [[0.5] * 3, [0.3] * 3]], np.float32)
  np.testing.assert_array_equal(np.asarray(mask_from_output(out, img)), [[True, False], [True, False]])


def test_bad_inputs(setup):
  prep, model = setup
  key = jax.random.key(0)
  good = np.ones((100, 100), bool)
  with pytest.raises(InputError, match="empty"):
    segment(model, prep.image, np.zeros((100, 100), bool), key)
  with pytest.raises(InputError, match="too small"):
    tiny = np.zeros((100, 100), bool); tiny[50:52, 50:52] = True
    segment(model, prep.image, tiny, key)
  with pytest.raises(InputError, match="shape"):
    segment(model, prep.image, np.ones((50, 50), bool), key)
  with pytest.raises(InputError, match="0 and 1"):
    segment(model, prep.image, np.full((100, 100), 3), key)
  with pytest.raises(InputError, match="uint8"):
    segment(model, prep.image.astype(np.float32), good, key)
  with pytest.raises(InputError, match="RGB"):
    segment(model, np.zeros((100, 100, 4), np.uint8), good, key)
  with pytest.raises(InputError, match="square"):
    segment(model, np.zeros((100, 90, 3), np.uint8), good, key)


def test_a_net_for_200_answers_at_200_from_a_20x20_thumbnail(photo):
  prep = prepare_image(photo, 200, 0.1)
  model = Upsampler(4, 0.125, size=200, scale=0.1, rngs=nnx.Rngs(0))
  outline = polygon_mask([[40, 40], [160, 50], [150, 170], [30, 140]], 200, 200)
  res = segment(model, prep.image, outline, jax.random.key(0))
  assert res.output.shape == (200, 200, 3) and res.mask.shape == (200, 200)
  assert res.input_thumbnail.shape == (20, 20, 3) and res.outline_small.shape == (20, 20)
  np.testing.assert_array_equal(res.input_thumbnail[res.outline_small],
                                prep.thumbnail[res.outline_small])
  with pytest.raises(InputError, match="answers at 200x200"):
    segment(model, prepare_image(photo).image, np.ones((100, 100), bool), jax.random.key(0))
