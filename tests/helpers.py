"""Helpers shared by the test files: synthetic pictures and running a main."""
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: XLA flags of every test process, after the caller's. LLVM's optimisation level 0 cuts
#: the suite's CPU time by 38% (one CLI test's by half): its programs are tiny and compiled once
#: or twice each, so compiling dominates. GEMMs and convolutions are Eigen's library
#: calls at any level, and the suite's recorded reference numbers hold at it (to 1e-5).
#: Speed is measured by experiments/benchmark.py, at XLA's defaults.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def disc(h=100, w=100, cy=50, cx=45, r=25):
  """A boolean disc."""
  yy, xx = np.mgrid[:h, :w]
  return (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2


def synthetic(h=100, w=100, r=25, seed=0):
  """A saturated disc on a textured, differently coloured background: (image, disc)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w]
  img = np.stack([30 + 0.3 * xx, 90 + 0.3 * yy, 160 + 0 * xx], -1) + rng.normal(0, 6, (h, w, 3))
  inside = disc(h, w, h // 2, w // 2, r)
  img[inside] = [230, 190, 30] + rng.normal(0, 6, (inside.sum(), 3))
  return np.clip(img, 0, 255).astype(np.uint8), inside


def cli(module, *args, timeout=240):
  """Runs `python -m module args` from the repository root; the CompletedProcess."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def assert_each_net_is_its_own_fit(keys, images, options, together, reasons) -> list:
  """Asserts that each net of a population (`together`, `reasons`) equals its own
  `fit()`; returns each single fit's per-epoch records."""
  import jax
  import pytest
  from singleseg_jax.fit import fit
  logs = []
  for k, im, st, reason in zip(keys, images, together, reasons):
    records = []
    alone, why = fit(k, im, options, on_epoch=records.append)
    assert (st.epoch, reason) == (alone.epoch, why)
    assert st.plateau.best == pytest.approx(alone.plateau.best, rel=1e-4)
    for a, b in zip(jax.tree.leaves(st.train.params), jax.tree.leaves(alone.train.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    logs.append(records)
  return logs


def runlocal_config(image_path, **overrides):
  """The smoke-run config on `image_path`, with overrides."""
  from experiments.configs import default
  config = default.get_config("runlocal")
  config.image = str(image_path)
  for k, v in overrides.items():
    config[k] = v
  return config


def params_of(workdir, which="latest"):
  """The leaves of a run directory's saved parameters."""
  import jax
  from singleseg_jax import run
  _, state, _, _ = run.load_run(workdir, which)
  return jax.tree.leaves(state.params)
