import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from singleseg_jax import InputError, Upsampler, count_params, flops_per_sample
from singleseg_jax.paper.model import layer_sides, layer_widths


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
