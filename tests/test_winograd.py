"""Winograd layers: outputs and both gradients against stock autodiff for every stride-1
layer shape of the cat and car nets, under jit and vmap, and a fit against the custom
layer's."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from singleseg_jax import prepare_image
from singleseg_jax.paper import data as paper_data
from singleseg_jax.paper import winograd
from singleseg_jax.paper.layers import conv_transpose_reference, conv_transpose_winograd
from singleseg_jax.paper.model import LAYERS, layer_sides, layer_widths
from singleseg_jax.speed import make_state
from singleseg_jax.train import train_epoch

# Tolerances, as a fraction of the largest entry of the reference. A float32 direct
# convolution is a sum of 9*Cin products: a few roundings (2^-24 each) of the largest
# entry, a few 1e-7 measured. F(2x2,3x3)'s transforms have entries 0, +-1/2 and +-1,
# so they add a few more roundings and amplify none (5e-7 measured). F(4x4,3x3)'s
# reach 1/24 and 8 and mix entries of very different size before cancelling: its error
# is about 10x larger (Lavin & Gray 2016; Barabasz et al. 2018, "Error analysis and
# improving the accuracy of Winograd convolution"), 2e-6 to 6e-6 measured here. So 1e-5
# and 1e-4, a margin of ~10x over the measurements; a wrong tap or tile offset is off
# by the order of the entries themselves.
TOLERANCE = {2: 1e-5, 4: 1e-4}


def _stride1_shapes(in_channels, width):
  """(input side, Cin, Cout) of each stride-1 layer of the net."""
  sides, cin, out = layer_sides(), in_channels, []
  for i, ((_, stride, _), cout) in enumerate(zip(LAYERS, layer_widths(width))):
    if stride == 1:
      out.append((sides[i], cin, cout))
    cin = cout
  return out


# Every stride-1 layer of the cat net (256, width 1) and the car net (512, width 2):
# sides 10, 23 and 49 in both (outputs 12, 25 and 51: even and odd, divided by the tile
# or not). Compiling F(4x4) takes seconds, so each side is tested once, with the cat
# net's channels divided by 8 (the error grows with them; the margin above covers 8x).
assert {s for s, _, _ in _stride1_shapes(512, 2.0)} == {s for s, _, _ in _stride1_shapes(256, 1.0)}
SHAPES = [(side, cin // 8, max(cout // 8, 4)) for side, cin, cout in _stride1_shapes(256, 1.0)]


@functools.partial(jax.jit, static_argnames=("tile",))
def _outputs_and_grads(x, kernels, bias, cot, tile=None):
  """The layer's output and its VJP of `cot` wrt (x, kernel, bias), vmapped over a
  population of kernels, as fit_population runs the nets."""
  if tile is None:
    fn = lambda x, k, b: conv_transpose_reference(x, k, b, 1, (0, 0, 0, 0), "relu")
  else:
    fn = lambda x, k, b: conv_transpose_winograd(x, k, b, (0, 0, 0, 0), "relu", tile)

  def one(kernel):
    y, vjp = jax.vjp(fn, x, kernel, bias)
    return (y,) + vjp(cot)
  return jax.vmap(one)(kernels)


@pytest.mark.parametrize("side,cin,cout", SHAPES)
def test_outputs_and_gradients_equal_autodiff(side, cin, cout):
  k = jax.random.split(jax.random.key(side + cin), 4)
  x = jax.random.uniform(k[0], (2, side, side, cin))  # >= 0, as after a ReLU
  kernels = jax.random.normal(k[1], (2, 3, 3, cin, cout)) * (2.0 / (9 * cin)) ** 0.5
  bias = jax.random.normal(k[2], (cout,)) * 0.1
  cot = jax.random.normal(k[3], (2, side + 2, side + 2, cout))
  ref = _outputs_and_grads(x, kernels, bias, cot)
  assert 0.1 < float(jnp.mean(ref[0] > 0)) < 0.9  # the ReLU's mask is exercised
  for tile in winograd.TILES:
    ours = _outputs_and_grads(x, kernels, bias, cot, tile=tile)
    for a, b, name in zip(ours, ref, ("output", "x", "kernel", "bias")):
      assert a.shape == b.shape and a.dtype == b.dtype, name
      scale = float(jnp.max(jnp.abs(b)))
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                                 atol=TOLERANCE[tile] * scale, err_msg=f"F({tile}) {name}")


def test_forms_are_data_and_only_for_wide_stride_1_float32_layers():
  assert winograd.form_for(1, 10, jnp.float32, 256, 256) == winograd.FORMS[10]
  assert winograd.form_for(1, 10, jnp.float32, 512, 512) == winograd.FORMS[10]  # car
  assert set(winograd.FORMS.values()) <= {"f2", "f4"}
  assert winograd.form_for(2, 12, jnp.float32, 256, 256) == "custom"
  assert winograd.form_for(1, 10, jnp.bfloat16, 256, 256) == "custom"
  assert winograd.form_for(1, 11, jnp.float32, 256, 256) == "custom"  # not a seed side
  assert winograd.form_for(1, 10, jnp.float32, 128, 128) == "custom"  # too narrow to pay
  assert winograd.form_for(1, 10, jnp.float32, 256, 128) == winograd.FORMS[10]
  # Layer 3 (side 23): the car net's is wide enough, the cat net's is not.
  assert winograd.form_for(1, 23, jnp.float32, 256, 128) == winograd.FORMS[23]
  assert winograd.form_for(1, 23, jnp.float32, 128, 64) == "custom"


def test_training_follows_the_custom_layers_loss_curve(photo, monkeypatch):
  # Winograd changes only the rounding, so from the same initial net its loss curve
  # must stay far closer to the custom layer's than another seed's curve is. The tiny
  # net is below the width where Winograd pays, so it is asked for here regardless.
  monkeypatch.setattr(winograd, "MIN_CHANNEL_PRODUCT", 0)
  train, _ = paper_data.make_dataset(jax.random.key(0), prepare_image(photo).image, 40, 8,
                                     0.75)

  def curve(layer, seed, epochs=20):
    state, losses = make_state(8, 0.125, layer=layer, seed=seed), []
    for epoch in range(epochs):
      state, metrics = train_epoch(state, train, jax.random.key(epoch), batch_size=10)
      losses.append(float(metrics["loss"]))
    return np.array(losses), np.asarray(state.params["layers"][0]["kernel"][...])

  (custom, k_custom), (other_seed, _), (wino, k_wino) = (
      curve("custom", 0), curve("custom", 1), curve("winograd", 0))
  assert wino[-3:].mean() < 0.97 * wino[:3].mean()  # it learns (5% in these 20 epochs)
  # It ran the Winograd form: layer 1's weights moved apart by rounding (the losses,
  # sums of 30,000 terms near 2,900, may not show it), and no further.
  assert 0 < np.abs(k_wino - k_custom).max() < 1e-3 * np.abs(k_custom).max()
  seed_spread = np.abs(custom - other_seed).mean()
  assert np.abs(wino - custom).mean() < 0.1 * seed_spread
