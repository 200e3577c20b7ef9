import numpy as np
import pytest

from singleseg_jax import InputError, cutouts, matting


def _two_colours(side=100, edge=50):
  """A red left part and a blue right part meeting at column `edge`, a little noise."""
  img = np.zeros((side, side, 3), np.uint8)
  img[:, :edge] = (200, 40, 30)
  img[:, edge:] = (30, 60, 190)
  noise = np.random.default_rng(0).integers(-8, 9, img.shape)
  return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def test_the_guided_filter_keeps_a_constant_and_follows_a_colour_edge():
  img = _two_colours()
  flat = matting.guided_filter(img, np.full((100, 100), 0.7, np.float32), 2, 1e-3)
  np.testing.assert_allclose(flat, 0.7, atol=1e-4)
  # At 400 px, a mask one pixel left of the colour edge: the filter puts it back.
  img = _two_colours(400, 200)
  mask = np.zeros((400, 400), bool)
  mask[:, :199] = True
  refined = matting.refine(img, mask)
  np.testing.assert_array_equal(refined, np.arange(400)[None, :].repeat(400, 0) < 200)


def test_soft_alpha_is_fractional_only_near_the_edge():
  # Blur the colour edge: mixed pixels there should get alpha strictly between 0 and 1.
  side = 200
  x = np.clip((np.arange(side) - 95) / 10.0, 0, 1)[None, :, None]
  img = ((1 - x) * np.array([200, 40, 30]) + x * np.array([30, 60, 190])).astype(np.uint8)
  img = np.broadcast_to(img, (side, side, 3)).copy()
  mask = np.zeros((side, side), bool)
  mask[:, :100] = True
  alpha = matting.soft_alpha(img, mask)
  assert alpha.dtype == np.float32 and 0 <= alpha.min() and alpha.max() <= 1
  assert ((alpha > 0.05) & (alpha < 0.95)).any()
  band = int(np.ceil(matting.DEFAULT.band * side / 100))
  far = np.abs(np.arange(side) - 99.5) > band + 1
  np.testing.assert_array_equal(alpha[:, far], mask[:, far])
  cut = cutouts.rgba(img, mask, soft_edges=True)
  assert cut.shape == (side, side, 4) and set(np.unique(cut[..., 3])) > {0, 255}


def test_an_edgeless_mask_and_bad_options():
  img = _two_colours()
  np.testing.assert_array_equal(matting.soft_alpha(img, np.ones((100, 100), bool)), 1)
  with pytest.raises(InputError, match="positive"):
    matting.soft_alpha(img, np.ones((100, 100), bool), matting.EdgeOptions(eps=0))
  with pytest.raises(InputError, match="guide"):
    matting.guided_filter(img[:50], np.zeros((100, 100)), 1, 1e-3)
