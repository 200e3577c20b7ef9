"""Training pairs from one image, and the network input shared by training and use.

Everything runs on the device from one PRNG key. Levels follow the seed's uint8
arithmetic: the target is `image .* mask`; the input is `rgb2gray(imresize(target,
0.1))` (each step rounded as for uint8), tiled to `in_channels`, plus Gaussian noise of
mean 127.5 and standard deviation 1.2, everything divided by 255 at the end.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from singleseg_jax import image as image_lib
from singleseg_jax.errors import InputError
from singleseg_jax.paper.masks import sample_masks

NOISE_MEAN = 127.5
NOISE_STD = 1.2


class Dataset(NamedTuple):
  """Training pairs of one image."""
  inputs: jax.Array   # (N, s, s, in_channels) float32, about 0.5 + gray/255
  targets: jax.Array  # (N, S, S, 3) float32 in [0, 1]
  masks: jax.Array    # (N, S, S) bool, the region each target keeps

  def __len__(self):
    return self.inputs.shape[0]


def network_input(key: jax.Array, thumbnail_rgb: jax.Array, in_channels: int) -> jax.Array:
  """The seed's input from thumbnails of 0..255 levels (..., s, s, 3).

  Grayscale (rounded), tiled to `in_channels`, plus N(127.5, 1.2) noise, / 255.
  Returns float32 (..., s, s, in_channels).
  """
  if not isinstance(in_channels, int) or in_channels < 1:
    raise InputError(f"in_channels must be a positive integer, got {in_channels!r}")
  gray = image_lib.rgb_to_gray(thumbnail_rgb.astype(jnp.float32))
  noise = NOISE_MEAN + NOISE_STD * jax.random.normal(
      key, gray.shape + (in_channels,), dtype=jnp.float32)
  return (gray[..., None] + noise) / 255.0


def make_pairs(key: jax.Array, image: jax.Array, num: int, in_channels: int,
               scale: float = 0.1) -> Dataset:
  """`num` (input, target) pairs from one (S, S, 3) image of 0..255 levels."""
  image = jnp.asarray(image, dtype=jnp.float32)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise InputError(f"image must have shape (H, W, 3), got {image.shape}")
  h, w = image.shape[:2]
  mask_key, noise_key = jax.random.split(key)
  masks = sample_masks(mask_key, num, h, w)
  targets = image[None] * masks[..., None]
  small = (image_lib.thumbnail_size(h, scale), image_lib.thumbnail_size(w, scale))
  thumbs = image_lib.resize_levels(targets, small, xp=jnp)
  inputs = network_input(noise_key, thumbs, in_channels)
  return Dataset(inputs, targets / 255.0, masks)


def num_train(num_samples: int, train_fraction: float) -> int:
  """Pairs of a fixed set of `num_samples` used for training: ceil(fraction * N)."""
  return -(-int(round(train_fraction * num_samples * 1e6)) // 1_000_000)  # ceil, fp-safe


def make_dataset(key: jax.Array, image, num_samples: int = 1000, in_channels: int = 256,
                 train_fraction: float = 0.75, scale: float = 0.1) -> tuple[Dataset, Dataset]:
  """The seed's fixed set: `num_samples` pairs, the first ceil(fraction*N) for training.

  `image` is the prepared (S, S, 3) uint8 image (or float 0..255 levels).
  Returns (train, val).
  """
  if not isinstance(num_samples, int) or num_samples < 2:
    raise InputError(f"num_samples must be an integer >= 2, got {num_samples!r}")
  if not 0 < train_fraction < 1:
    raise InputError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
  n_train = num_train(num_samples, train_fraction)
  if not 1 <= n_train < num_samples:
    raise InputError(f"train_fraction {train_fraction} leaves no train or val samples")
  pairs = jax.jit(make_pairs, static_argnums=(2, 3, 4))(
      key, jnp.asarray(image, jnp.float32), num_samples, in_channels, scale)
  train = Dataset(*(a[:n_train] for a in pairs))
  val = Dataset(*(a[n_train:] for a in pairs))
  return train, val
