import jax
import jax.numpy as jnp
import numpy as np
import pytest

from singleseg_jax import InputError, make_dataset, make_pairs, network_input, prepare_image
from singleseg_jax import image as image_lib


@pytest.fixture(scope="module")
def dataset(photo):
  prep = prepare_image(photo)
  return prep, make_dataset(jax.random.key(0), prep.image, num_samples=200, in_channels=64)


def test_split_and_shapes(dataset):
  _, (train, val) = dataset
  assert len(train) == 150 and len(val) == 50  # ceil(0.75 * 200)
  assert train.inputs.shape == (150, 10, 10, 64) and train.targets.shape == (150, 100, 100, 3)
  assert train.masks.shape == (150, 100, 100) and train.masks.dtype == jnp.bool_


def test_pairs_follow_the_size(photo):
  prep = prepare_image(photo, 200, 0.1)
  train, val = make_dataset(jax.random.key(0), prep.image, 8, 4, scale=0.1)
  assert train.inputs.shape == (6, 20, 20, 4) and train.targets.shape == (6, 200, 200, 3)
  assert val.masks.shape == (2, 200, 200)
  # The input is the gray 20x20 thumbnail of the target plus the N(127.5, 1.2) noise.
  thumbs = image_lib.resize_levels(np.round(np.asarray(train.targets, np.float64) * 255),
                                   (20, 20))
  gray = np.round(thumbs @ np.asarray(image_lib.GRAY_WEIGHTS))
  noise = np.asarray(train.inputs, np.float64) * 255 - gray[..., None]
  assert abs(noise.mean() - 127.5) < 0.1 and abs(noise.std() - 1.2) < 0.1


def test_seed_split_is_750_of_1000(photo):
  train, val = make_dataset(jax.random.key(1), prepare_image(photo).image, 1000, 4)
  assert len(train) == 750 and len(val) == 250


def test_targets_are_the_masked_image(dataset):
  prep, (train, _) = dataset
  expect = prep.image[None].astype(np.float32) / 255 * np.asarray(train.masks)[..., None]
  np.testing.assert_allclose(np.asarray(train.targets), expect, atol=1e-7)
  assert float(train.targets.min()) >= 0 and float(train.targets.max()) <= 1


def test_inputs_are_gray_thumbnail_plus_noise(dataset):
  prep, (train, _) = dataset
  targets255 = np.asarray(train.targets, np.float64) * 255
  thumbs = image_lib.resize_levels(np.round(targets255), (10, 10))
  gray = np.round(thumbs @ np.asarray(image_lib.GRAY_WEIGHTS))
  noise = np.asarray(train.inputs, np.float64) * 255 - gray[..., None]
  # All channels carry the same gray level; what is left is N(127.5, 1.2) noise.
  assert abs(noise.mean() - 127.5) < 0.02
  assert abs(noise.std() - 1.2) < 0.02
  assert abs(np.mean(((noise - 127.5) / 1.2) ** 3)) < 0.05  # symmetric
  per_channel = noise.reshape(-1, 64).std(0)
  assert per_channel.min() > 1.1 and per_channel.max() < 1.3
  assert 127.5 / 255 - 0.03 < float(train.inputs.min()) and float(train.inputs.max()) < 1.51


def test_same_key_same_data_different_key_different(photo):
  img = prepare_image(photo).image
  a = make_pairs(jax.random.key(5), jnp.asarray(img, jnp.float32), 8, 4)
  b = make_pairs(jax.random.key(5), jnp.asarray(img, jnp.float32), 8, 4)
  c = make_pairs(jax.random.key(6), jnp.asarray(img, jnp.float32), 8, 4)
  np.testing.assert_array_equal(np.asarray(a.inputs), np.asarray(b.inputs))
  assert not np.array_equal(np.asarray(a.masks), np.asarray(c.masks))


def test_network_input_shape_and_errors():
  x = network_input(jax.random.key(0), jnp.zeros((2, 10, 10, 3)), 7)
  assert x.shape == (2, 10, 10, 7)
  with pytest.raises(InputError):
    network_input(jax.random.key(0), jnp.zeros((10, 10, 3)), 0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_samples=1), "num_samples"), (dict(train_fraction=1.0), "train_fraction"),
    (dict(train_fraction=0.0), "train_fraction"), (dict(in_channels=-3), "in_channels")])
def test_bad_config_values(photo, kwargs, match):
  with pytest.raises(InputError, match=match):
    make_dataset(jax.random.key(0), prepare_image(photo).image, **kwargs)
