"""Shared fixtures: a small synthetic photo, saved, and a smoke run fitted on it."""
import os

from helpers import TEST_XLA_FLAGS

# Two virtual CPU devices so the sharding tests run on any machine, and XLA's fast
# compile (TEST_XLA_FLAGS); set before jax loads, and inherited by the mains the tests start.
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", "--xla_force_host_platform_device_count=2"), TEST_XLA_FLAGS])

import shutil
import tempfile

import numpy as np
import pytest


def pytest_configure(config):
  """One persistent XLA compilation cache for the whole session: its workers and the
  mains the tests start compile the same small programs again and again (the smoke
  configs on the same photo), and reading them back is most of the suite's time saved.
  The controller makes it before xdist starts the workers, which inherit the variable;
  it starts empty, so every program still compiles at least once in each run. A cache
  the caller set is used as it is."""
  if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return
  config._jax_cache_dir = tempfile.mkdtemp(prefix="singleseg-jax-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = config._jax_cache_dir
  # Cache every program: most of these compile in well under jax's default 1 s floor.
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def pytest_unconfigure(config):
  if getattr(config, "_jax_cache_dir", None):
    shutil.rmtree(config._jax_cache_dir, ignore_errors=True)
    # A second session in this process (pytest.main twice) must not take the removed
    # folder for a cache of the caller's.
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") == config._jax_cache_dir:
      del os.environ["JAX_COMPILATION_CACHE_DIR"]


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
  """A 120x160 RGB test image: a bright disc on a textured background."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:120, :160]
  img = np.stack([40 + 0.5 * xx, 60 + 0.4 * yy, 90 + 0 * xx], -1)
  img = img + rng.normal(0, 8, img.shape)
  disc = (yy - 55) ** 2 + (xx - 50) ** 2 < 30 ** 2
  img[disc] = [220, 180, 40]
  return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory, photo):
  """The photo saved as a PNG."""
  from PIL import Image
  path = tmp_path_factory.mktemp("img") / "photo.png"
  Image.fromarray(photo).save(path)
  return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, photo_path):
  """A finished smoke run (default.py:runlocal) on the photo."""
  from helpers import runlocal_config
  from singleseg_jax import run
  workdir = str(tmp_path_factory.mktemp("run") / "w")
  run.train_and_evaluate(runlocal_config(photo_path), workdir)
  return workdir
