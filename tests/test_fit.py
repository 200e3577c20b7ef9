import jax
import numpy as np
import pytest

from jax.sharding import PartitionSpec

from helpers import assert_each_net_is_its_own_fit
from singleseg_jax import InputError, prepare_image
from singleseg_jax.fit import (NETS, FitOptions, fit, fit_population, fit_seeds, global_array,
                               init_state, population_functions, population_inputs,
                               population_mesh)
from singleseg_jax.paper.layers import LAYER_CHOICES, uses_custom_vjp, uses_winograd

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


def test_a_population_of_seeds_equals_individual_fits(image):
  # Three nets on the conftest's two devices: the mesh is filled with a copy of the last.
  # Blocks of 2 epochs between syncs: the nets stop inside a block, on the device.
  assert jax.device_count() == 2
  opts = FitOptions(**{**OPTIONS.__dict__, "num_epochs": 8, "epochs_per_sync": 2})
  keys = [jax.random.key(s) for s in (0, 1, 2)]
  records = []
  together, reasons = fit_seeds(keys, image, opts, on_epoch=lambda i, st, r: records.append(
      (i, r["epoch"])))
  assert len(together) == 3
  assert sorted(records) == [(i, e + 1) for i, st in enumerate(together) for e in range(st.epoch)]
  assert any(st.epoch % 2 and st.epoch < 8 for st in together), [s.epoch for s in together]
  assert_each_net_is_its_own_fit(keys, [image] * 3, opts, together, reasons)


def test_a_population_of_images_with_fresh_data_equals_individual_fits(image):
  opts = FitOptions(**{**OPTIONS.__dict__, "fresh_data": True, "num_epochs": 3})
  keys = [jax.random.key(5), jax.random.key(5)]
  images = np.stack([image, image[::-1, ::-1]])  # same size, other content
  together, reasons = fit_population(keys, images, opts)
  assert_each_net_is_its_own_fit(keys, images, opts, together, reasons)
  assert not np.allclose(*(np.asarray(jax.tree.leaves(s.train.params)[0]) for s in together))


def test_the_population_epoch_stays_on_each_device_and_donates_the_nets(image):
  opts = FitOptions(**{**OPTIONS.__dict__, "fresh_data": True})
  mesh = population_mesh()
  fns = population_functions(opts, mesh)
  nets = PartitionSpec(NETS)
  kd, im = population_inputs([jax.random.key(s) for s in range(4)], image, mesh)
  ts, train, val, rule = fns.init(kd, im)
  # Each net's pairs were made on the device that trains it: sharded over the nets.
  assert train.inputs.shape[0] == 4 and train.inputs.sharding.spec == nets
  assert {s.device for s in train.inputs.addressable_shards} == set(jax.devices())
  args = (ts, train, val, kd, im, rule, *(global_array(mesh, PartitionSpec(), np.int32(n))
                                          for n in (0, 1)))
  for fn, fn_args in ((fns.block, args), (fns.init, (kd, im))):
    hlo = fn.lower(*fn_args).compile().as_text()
    for op in ("all-reduce", "all-gather", "collective-permute", "all-to-all",
               "reduce-scatter"):
      assert op not in hlo
  fns.block(*args)
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves((ts, rule)))


def test_a_population_needs_one_image_or_one_per_key(image):
  with pytest.raises(InputError, match="one per key"):
    fit_population([jax.random.key(0)] * 3, np.stack([image, image]), OPTIONS)
  with pytest.raises(InputError, match="paper"):
    fit_population([jax.random.key(0)], image, FitOptions(variant="snap"))


def test_fresh_data_changes_training_pairs(image):
  opts = FitOptions(**{**OPTIONS.__dict__, "fresh_data": True, "num_epochs": 2})
  a, _ = fit(jax.random.key(0), image, opts)
  b, _ = fit(jax.random.key(0), image, FitOptions(**{**OPTIONS.__dict__, "num_epochs": 2}))
  assert not np.allclose(np.asarray(jax.tree.leaves(a.train.params)[0]),
                         np.asarray(jax.tree.leaves(b.train.params)[0]))


@pytest.mark.parametrize("name,size", [("cat200", 200), ("cat400", 400)])
def test_the_larger_configs_train_with_a_falling_loss(photo, name, size):
  import importlib
  from singleseg_jax import run
  config = importlib.import_module(f"experiments.configs.{name}").get_config("runlocal")
  options = run.fit_options(config)
  assert (options.size, options.scale) == (size, 0.1)
  records = []
  state, _ = fit(jax.random.key(0), prepare_image(photo, size, 0.1).image, options,
                 on_epoch=records.append)
  losses = [r["train_loss"] for r in records]
  assert len(losses) == config.num_epochs and all(b < a for a, b in zip(losses, losses[1:]))
  assert records[-1]["val_loss"] < records[0]["val_loss"]
  side = size // 10
  out = state.train.model()(np.zeros((1, side, side, config.in_channels), np.float32))
  assert out.shape == (1, size, size, 3)


def test_bad_options():
  with pytest.raises(InputError, match="dtype"):
    FitOptions(dtype="float16")
  with pytest.raises(InputError, match="layer"):
    FitOptions(layer="fast")
  with pytest.raises(InputError, match="num_epochs"):
    FitOptions(num_epochs=0)
  with pytest.raises(InputError, match="patience"):
    FitOptions(patience=0)
  with pytest.raises(InputError, match="at most half"):
    FitOptions(scale=0.6)
  with pytest.raises(InputError, match="size 100 only"):
    FitOptions(variant="snap", size=200)


def _fit_with_syncs(image, options, key=jax.random.key(0)):
  syncs, records = [], []
  state, reason = fit(key, image, options, on_epoch=records.append,
                      on_sync=lambda st, best: syncs.append((st.epoch, best)))
  return state, reason, syncs, records


@pytest.mark.parametrize("variant", ["paper", "snap"])
def test_any_epochs_per_sync_gives_the_same_fit(image, variant):
  opts = dict(OPTIONS.__dict__, num_epochs=7)
  if variant == "snap":
    opts.update(variant="snap", snap_segments=16, snap_hidden=8, snap_rounds=1, snap_steps=2,
                batch_size=8, patience=3, rel_tol=0.02)
  ref, why, ref_syncs, ref_records = _fit_with_syncs(image, FitOptions(**opts))
  assert [e for e, _ in ref_syncs] == list(range(1, ref.epoch + 1))  # K=1: a sync per epoch
  for k in (3, 7):
    got, reason, syncs, records = _fit_with_syncs(image, FitOptions(**{**opts,
                                                                        "epochs_per_sync": k}))
    assert (got.epoch, reason, got.plateau) == (ref.epoch, why, ref.plateau)
    assert records == ref_records  # the same metrics, logged per epoch
    assert [e for e, _ in syncs] == sorted({min(e, ref.epoch) for e in range(k, 8, k)}
                                           | {ref.epoch})
    for a, b in zip(jax.tree.leaves(got.train.params), jax.tree.leaves(ref.train.params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The last new best of the run is the same state at any K.
    best_ref = [b for _, b in ref_syncs if b is not None][-1]
    best = [b for _, b in syncs if b is not None][-1]
    assert best.epoch == best_ref.epoch == ref.plateau.best_epoch + 1
    for a, b in zip(jax.tree.leaves(best.train.params), jax.tree.leaves(best_ref.train.params)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_block_that_diverges_hands_back_the_last_good_state(image):
  from singleseg_jax.fit import TrainingDiverged
  bad = FitOptions(**{**OPTIONS.__dict__, "learning_rate": 1e38, "num_epochs": 6,
                      "epochs_per_sync": 6})
  syncs = []
  with pytest.raises(TrainingDiverged):
    fit(jax.random.key(0), image, bad, on_sync=lambda st, best: syncs.append(st))
  assert len(syncs) == 1
  last = syncs[0]
  assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(last.train.params))


@pytest.mark.parametrize("layer", LAYER_CHOICES)
def test_the_paper_net_is_built_with_the_chosen_layer(layer):
  model = init_state(jax.random.key(0), FitOptions(**{**OPTIONS.__dict__, "layer": layer})).model()
  assert {l.fast_grad for l in model.layers} == {uses_custom_vjp(layer)}
  assert {l.winograd for l in model.layers} == {uses_winograd(layer)}
