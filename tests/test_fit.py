import jax
import numpy as np
import pytest

from singleseg_jax import InputError, prepare_image
from singleseg_jax.fit import FitOptions, fit, fit_seeds, init_state
from singleseg_jax.paper.layers import LAYER_CHOICES, uses_custom_vjp

OPTIONS = FitOptions(in_channels=8, width=0.125, num_samples=60, batch_size=15, num_epochs=5,
                     patience=2, rel_tol=0.05)


@pytest.fixture(scope="module")
def image(photo):
  return prepare_image(photo).image


def test_fit_is_deterministic_and_resumable(image):
  key = jax.random.key(0)
  full, reason = fit(key, image, OPTIONS)
  first, _ = fit(key, image, FitOptions(**{**OPTIONS.__dict__, "num_epochs": 2}))
  resumed, reason2 = fit(key, image, OPTIONS, resume=first)
  assert reason == reason2 and full.epoch == resumed.epoch
  for a, b in zip(jax.tree.leaves(full.train.params), jax.tree.leaves(resumed.train.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_vmapped_seeds_equal_individual_fits(image):
  keys = [jax.random.key(s) for s in (0, 1, 2)]
  together, reasons = fit_seeds(keys, image, OPTIONS)
  for k, st, reason in zip(keys, together, reasons):
    alone, why = fit(k, image, OPTIONS)
    assert (st.epoch, reason) == (alone.epoch, why)
    assert st.plateau.best == pytest.approx(alone.plateau.best, rel=1e-4)
    for a, b in zip(jax.tree.leaves(st.train.params), jax.tree.leaves(alone.train.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_fresh_data_changes_training_pairs(image):
  opts = FitOptions(**{**OPTIONS.__dict__, "fresh_data": True, "num_epochs": 2})
  a, _ = fit(jax.random.key(0), image, opts)
  b, _ = fit(jax.random.key(0), image, FitOptions(**{**OPTIONS.__dict__, "num_epochs": 2}))
  assert not np.allclose(np.asarray(jax.tree.leaves(a.train.params)[0]),
                         np.asarray(jax.tree.leaves(b.train.params)[0]))


def test_bad_options():
  with pytest.raises(InputError, match="dtype"):
    FitOptions(dtype="float16")
  with pytest.raises(InputError, match="layer"):
    FitOptions(layer="fast")
  with pytest.raises(InputError, match="num_epochs"):
    FitOptions(num_epochs=0)
  with pytest.raises(InputError, match="patience"):
    FitOptions(patience=0)


@pytest.mark.parametrize("layer", LAYER_CHOICES)
def test_the_paper_net_is_built_with_the_chosen_layer(layer):
  model = init_state(jax.random.key(0), FitOptions(**{**OPTIONS.__dict__, "layer": layer})).model()
  assert {l.fast_grad for l in model.layers} == {uses_custom_vjp(layer)}
