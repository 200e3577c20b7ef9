"""The encdec net: its decoder is the paper's, it starts as the paper's net, it fits,
alone or in a population, and its answers have the shapes the segment path expects."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_each_net_is_its_own_fit
from singleseg_jax import InputError, prepare_image, variants
from singleseg_jax.encdec import EncDecNet
from singleseg_jax.fit import FitOptions, fit_seeds
from singleseg_jax.paper.data import make_dataset
from singleseg_jax.paper.model import Upsampler

OPTIONS = FitOptions(variant="encdec", in_channels=8, width=0.125, num_samples=60,
                     batch_size=15, num_epochs=3, encdec_hidden=4, patience=10)


@pytest.fixture(scope="module")
def image(photo):
  return prepare_image(photo).image


@pytest.fixture(scope="module")
def pairs(image):
  return make_dataset(jax.random.key(3), image, 8, OPTIONS.in_channels)[0]


def test_a_fresh_net_is_the_paper_net_with_the_same_decoder(image, pairs):
  key = jax.random.key(7)
  paper = variants.get("paper").init(key, OPTIONS).model()
  net = variants.get("encdec").init(key, OPTIONS).model()
  assert isinstance(net, EncDecNet) and isinstance(net.decoder, Upsampler)
  paper_leaves = jax.tree.leaves_with_path(jax.tree.map(np.asarray, paper.layers))
  decoder_leaves = jax.tree.leaves_with_path(jax.tree.map(np.asarray, net.decoder.layers))
  assert [p for p, _ in paper_leaves] == [p for p, _ in decoder_leaves]
  for (_, a), (_, b) in zip(paper_leaves, decoder_leaves):
    np.testing.assert_array_equal(a, b)
  image = jnp.asarray(image, jnp.float32)
  out = net(pairs.inputs, image)
  assert out.shape == (6, 100, 100, 3) and out.dtype == jnp.float32
  # The residual's last conv starts at zero, so the encoder adds nothing yet ...
  np.testing.assert_array_equal(np.asarray(out), np.asarray(paper(pairs.inputs)))
  # ... while the rest of it is live: a non-zero last conv makes the image matter.
  net.residual.kernel[...] = jnp.full_like(net.residual.kernel[...], 0.05)
  code = net.encode(pairs.inputs[:2], image)
  assert float(jnp.abs(code - pairs.inputs[:2]).max()) > 1e-2
  assert float(jnp.abs(code - net.encode(pairs.inputs[:2], image[::-1])).max()) > 1e-3


def test_a_population_equals_single_fits_which_learn_and_answer_like_the_paper(image):
  # Two nets on the conftest's two devices: each gets its image inside the sharded,
  # vmapped epoch, as its single fit does.
  keys = [jax.random.key(s) for s in (3, 4)]
  together, reasons = fit_seeds(keys, image, OPTIONS)
  logs = assert_each_net_is_its_own_fit(keys, [image] * 2, OPTIONS, together, reasons)
  for records in logs:
    assert len(records) == OPTIONS.num_epochs
    assert records[-1]["val_loss"] < records[0]["val_loss"]
  state = together[0]
  residual = np.asarray(state.train.params["residual"]["kernel"][...])
  assert np.abs(residual).max() > 0  # the encoder was trained, not left at its init
  outlines = np.zeros((3, 100, 100), bool)
  outlines[:, 20:70, 25:80] = True
  res = variants.get("encdec").predict(state.train.graphdef, state.train.params, image,
                                       outlines, jax.random.key(1))
  assert isinstance(res, variants.Segmentation)
  assert res.output.shape == (3, 100, 100, 3) and res.output.dtype == np.float32
  assert res.mask.shape == (3, 100, 100) and res.mask.dtype == bool
  assert res.input_thumbnail.shape == (3, 10, 10, 3) and res.outline_small.shape == (3, 10, 10)
  assert res.probability is None and 0 <= res.output.min() <= res.output.max() <= 1


def test_bad_encoder_settings_and_inputs():
  with pytest.raises(InputError, match="encdec_hidden"):
    FitOptions(variant="encdec", encdec_hidden=0)
  with pytest.raises(InputError, match="encdec_layers"):
    FitOptions(encdec_layers=1.5)
  net = EncDecNet(4, 0.125, 4, 1, rngs=nnx.Rngs(0))
  with pytest.raises(InputError, match="image must be"):
    net(jnp.zeros((2, 10, 10, 4)), jnp.zeros((50, 50, 3)))
