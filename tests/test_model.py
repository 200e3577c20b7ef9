import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from singleseg_jax import InputError, Upsampler, count_params, flops_per_sample
from singleseg_jax.paper.model import LAYERS, layer_sides, layer_table, layer_widths

#: The seed's table, copied from `train_network.m`: (width, stride, crop t, b, l, r).
PAPER_TABLE = (
    (256, 1, (0, 0, 0, 0)),
    (128, 2, (1, 1, 1, 1)),
    (64, 1, (0, 0, 0, 0)),
    (32, 2, (1, 1, 1, 1)),
    (8, 1, (0, 0, 0, 0)),
    (3, 2, (2, 1, 1, 2)),
)
#: Sides after each layer, by (size, scale): the issue's 200 and 400 nets, and small
#: thumbnails and an odd side, where the stride-2 crops alone cannot land the side.
SIDES = {
    (100, 0.1): (10, 12, 23, 25, 49, 51, 100),
    (200, 0.1): (20, 22, 24, 47, 49, 98, 100, 200),
    (400, 0.1): (40, 42, 44, 46, 48, 97, 99, 198, 200, 400),
    (50, 0.1): (5, 6, 11, 13, 25, 26, 50),
    (64, 0.125): (8, 8, 15, 16, 31, 33, 64),
    (101, 0.1): (11, 12, 23, 25, 49, 51, 101),
}


def test_cat_net_parameter_count_and_shapes():
  model = Upsampler(256, 1.0, rngs=nnx.Rngs(0))
  assert count_params(model) == 979_907
  x = jnp.zeros((2, 10, 10, 256))
  sides = [10]
  for layer in model.layers:
    x = layer(x)
    sides.append(x.shape[1])
    assert x.shape[1] == x.shape[2]
  assert tuple(sides) == (10, 12, 23, 25, 49, 51, 100) == layer_sides()
  assert [l.kernel.shape[-1] for l in model.layers] == [256, 128, 64, 32, 8, 3]
  assert x.shape == (2, 100, 100, 3)


def test_car_net_and_width_multiplier():
  assert layer_widths(2) == (512, 256, 128, 64, 16, 3)
  assert layer_widths(0.125) == (32, 16, 8, 4, 1, 3)
  car = Upsampler(512, 2.0, rngs=nnx.Rngs(0))
  expect, cin = 0, 512
  for cout in layer_widths(2):
    expect += 9 * cin * cout + cout
    cin = cout
  assert count_params(car) == expect == 3_918_211


def test_output_in_unit_interval_and_init_like_matlab():
  model = Upsampler(16, 0.25, rngs=nnx.Rngs(1))
  y = model(jax.random.uniform(jax.random.key(0), (3, 10, 10, 16)))
  assert float(y.min()) >= 0 and float(y.max()) <= 1
  k = np.asarray(model.layers[1].kernel[...])
  limit = np.sqrt(6 / (9 * k.shape[2] + 9 * k.shape[3]))  # Glorot, fans 9*Cin, 9*Cout
  assert np.abs(k).max() <= limit and np.abs(k).max() > 0.8 * limit
  assert not np.any(np.asarray(model.layers[1].bias[...]))


def test_flops_count():
  # 2 * 9 * Cin * Cout * (input side)^2 summed over layers (cat net): 316.1 MFLOP.
  assert flops_per_sample(256, 1.0) == 316_131_120


def test_bad_arguments():
  with pytest.raises(InputError):
    Upsampler(0, rngs=nnx.Rngs(0))
  with pytest.raises(InputError):
    Upsampler(8, width=-1, rngs=nnx.Rngs(0))
  with pytest.raises(InputError, match="network input"):
    Upsampler(8, 0.125, rngs=nnx.Rngs(0))(jnp.zeros((1, 10, 10, 9)))


def test_the_table_derived_for_100_is_the_seeds():
  assert tuple(tuple(l) for l in layer_table(100, 0.1)) == PAPER_TABLE
  assert LAYERS == layer_table()


@pytest.mark.parametrize("size,scale", list(SIDES))
def test_layer_sides_and_output_shape_follow_the_size(size, scale):
  sides = SIDES[(size, scale)]
  assert layer_sides(size, scale) == sides
  model = Upsampler(4, 0.125, size=size, scale=scale, rngs=nnx.Rngs(0))
  x = jnp.zeros((1, sides[0], sides[0], 4))
  for layer, side in zip(model.layers, sides[1:]):
    x = layer(x)
    assert x.shape[1:3] == (side, side)
  assert x.shape == (1, size, size, 3) == model(jnp.zeros((1, sides[0], sides[0], 4))).shape
  table = layer_table(size, scale)
  assert table[-1].width == 3 and [l.stride for l in table].count(2) == 3  # ratio 8-10: 8x
  assert all(0 <= c <= 2 for l in table[:-1] for c in l.crop)


def test_widths_and_flops_at_200_and_400():
  assert layer_widths(1, 200, 0.1) == (256, 256, 128, 64, 32, 8, 3)
  assert layer_widths(1, 400, 0.1) == (256,) * 4 + (128, 64, 32, 8, 3)
  for size, flops in ((200, 1_845_363_456), (400, 12_053_873_664)):
    sides, widths = layer_sides(size, 0.1), (256,) + layer_widths(1, size, 0.1)
    assert flops_per_sample(256, 1.0, size, 0.1) == flops == sum(
        2 * 9 * s * s * cin * cout for s, cin, cout in zip(sides, widths, widths[1:]))
  # Other numbers of doublings: halving from 128 with a floor of 8, 8 before the output.
  assert layer_widths(1, 100, 0.25) == (256, 128, 8, 3)
  assert layer_widths(1, 100, 0.05) == (256, 128, 64, 32, 16, 8, 8, 3)


@pytest.mark.parametrize("size,scale,message", [(100, 0.6, "at most half"),
                                                (99, 0.5, "at most half"),
                                                (1, 0.5, "size must be"),
                                                (100, "0.1", "scale must be")])
def test_sizes_without_a_net_are_input_errors(size, scale, message):
  with pytest.raises(InputError, match=message):
    Upsampler(4, 0.125, size=size, scale=scale, rngs=nnx.Rngs(0))
