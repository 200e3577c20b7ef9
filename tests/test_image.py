import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from singleseg_jax import InputError, image as image_lib


@pytest.mark.parametrize("n_in,n_out", [(100, 10), (433, 100), (100, 100), (10, 100), (7, 3)])
def test_resize_matrix_rows_are_normalised(n_in, n_out):
  m = image_lib.resize_matrix(n_in, n_out)
  assert m.shape == (n_out, n_in)
  np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)


def test_resize_matches_antialiased_keys_cubic_away_from_borders():
  # jax.image.resize (cubic, antialias) uses the same Keys kernel and stretching;
  # it differs only at the borders, where MATLAB mirrors instead of renormalising.
  rng = np.random.default_rng(1)
  img = rng.uniform(0, 255, (200, 200, 1))
  ours = image_lib.resize_matrix(200, 20) @ img[:, :, 0] @ image_lib.resize_matrix(200, 20).T
  ref = np.asarray(jax.image.resize(jnp.asarray(img, jnp.float64 if jax.config.x64_enabled
                                                else jnp.float32), (20, 20, 1), "cubic",
                                    antialias=True))[:, :, 0]
  np.testing.assert_allclose(ours[3:-3, 3:-3], ref[3:-3, 3:-3], rtol=0, atol=1e-3)


def test_resize_of_constant_is_constant_and_rounded():
  img = np.full((100, 100, 3), 77, np.uint8)
  small = image_lib.resize_uint8(img, (10, 10))
  assert small.dtype == np.uint8 and small.shape == (10, 10, 3)
  assert (small == 77).all()


def test_resize_mirrors_at_the_border():
  # A left/right step resized 1:1 must be unchanged, and a shrink must stay in range.
  img = np.zeros((10, 10, 1)); img[:, 5:] = 255
  same = image_lib.resize_levels(img, (10, 10))
  np.testing.assert_array_equal(same, img)
  small = image_lib.resize_levels(img, (5, 5))
  assert small.min() >= 0 and small.max() <= 255


def test_prepare_image_top_left_and_center(photo):
  prep = image_lib.prepare_image(photo)
  assert prep.image.shape == (100, 100, 3) and prep.thumbnail.shape == (10, 10, 3)
  assert prep.image.dtype == np.uint8 and prep.crop_box == (0, 0, 120)
  centre = image_lib.prepare_image(photo, crop="center")
  assert centre.crop_box == (0, 20, 120)
  assert not np.array_equal(prep.image, centre.image)


def test_rgb_to_gray_uses_bt601_weights():
  px = jnp.array([[255.0, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]])
  np.testing.assert_array_equal(np.asarray(image_lib.rgb_to_gray(px)),
                                [76, 150, 29, 18])  # MATLAB rgb2gray on uint8


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16"])
def test_load_image_converts_modes(tmp_path, photo, mode):
  path = tmp_path / "x.png"
  Image.fromarray(photo).convert(mode).save(path)
  arr = image_lib.load_image(path)
  assert arr.shape == photo.shape and arr.dtype == np.uint8


def test_load_image_errors(tmp_path):
  with pytest.raises(InputError, match="not found"):
    image_lib.load_image(tmp_path / "missing.jpg")
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not a jpeg at all")
  with pytest.raises(InputError, match="cannot read"):
    image_lib.load_image(bad)
  with pytest.raises(InputError, match="directory"):
    image_lib.load_image(tmp_path)


def test_truncated_image_is_an_input_error(tmp_path, photo):
  path = tmp_path / "t.jpg"
  Image.fromarray(photo).save(path)
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(InputError):
    image_lib.load_image(path)


def test_bad_arrays_are_rejected():
  with pytest.raises(InputError, match="too small"):
    image_lib.prepare_image(np.zeros((8, 40, 3), np.uint8))
  with pytest.raises(InputError, match="uint8"):
    image_lib.prepare_image(np.zeros((100, 100, 3), np.float32))
  with pytest.raises(InputError, match="RGB"):
    image_lib.prepare_image(np.zeros((100, 100, 4), np.uint8))
  with pytest.raises(InputError, match="crop"):
    image_lib.prepare_image(np.zeros((100, 100, 3), np.uint8), crop="middle")


def test_polygon_mask_square_and_triangle():
  sq = image_lib.polygon_mask([[10, 20], [30, 20], [30, 50], [10, 50]], 100, 100)
  expect = np.zeros((100, 100), bool); expect[20:50, 10:30] = True
  np.testing.assert_array_equal(sq, expect)
  tri = image_lib.polygon_mask([[0, 0], [100, 0], [0, 100]], 100, 100)
  assert abs(tri.sum() - 5000) < 101
  with pytest.raises(InputError, match="3 points"):
    image_lib.polygon_mask([[0, 0], [1, 1]], 10, 10)
  with pytest.raises(InputError, match="non-finite"):
    image_lib.polygon_mask([[0, 0], [1, np.nan], [2, 2]], 10, 10)
