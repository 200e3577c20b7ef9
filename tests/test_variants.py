"""The variant registry, and the interface every variant answers the same way."""
import jax
import numpy as np
import pytest

from singleseg_jax import InputError, prepare_image, variants
from singleseg_jax.fit import FitOptions

TINY = {"paper": dict(in_channels=4, width=0.125, num_samples=20, batch_size=5),
        "encdec": dict(variant="encdec", in_channels=4, width=0.125, num_samples=20,
                       batch_size=5, encdec_hidden=4, encdec_layers=1),
        "snap": dict(variant="snap", snap_segments=16, snap_hidden=8, snap_rounds=1,
                     num_samples=20, batch_size=4, snap_steps=1)}


def test_registry_names_and_errors():
  assert set(variants.REGISTRY) == {"paper", "encdec", "snap"} and variants.DEFAULT == "paper"
  with pytest.raises(InputError, match="variant must be one of"):
    variants.get("unet")
  with pytest.raises(InputError, match="variant must be one of"):
    FitOptions(variant="unet")


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_variant_inits_predicts_and_describes(name, photo):
  image = prepare_image(photo).image
  options = FitOptions(**TINY[name])
  variant = variants.get(options.variant)
  state = variant.init(jax.random.key(0), options)
  assert variants.for_model(state.graphdef, state.params) is variant
  outlines = np.zeros((2, 100, 100), bool)
  outlines[:, 20:70, 20:70] = True
  res = variant.predict(state.graphdef, state.params, image, outlines, jax.random.key(1))
  assert res.output.shape == (2, 100, 100, 3) and res.mask.shape == (2, 100, 100)
  assert res.mask.dtype == bool and 0 <= res.output.min() and res.output.max() <= 1
  assert (res.probability is None) == (name != "snap")
  assert variant.describe(options).startswith(name)
  fns = variant.epochs(jax.random.key(0), image, options)
  state, train_metrics = jax.jit(fns.run_epoch)(state, fns.data, 0)
  val = fns.run_val(state, fns.data)
  assert {"loss", variant.metric} <= set(train_metrics) <= set(val) | {"grad_norm"}
