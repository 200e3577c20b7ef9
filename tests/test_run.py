"""The run directory: files written, resume equal to an uninterrupted run, load_run."""
import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from helpers import params_of, runlocal_config
from singleseg_jax import InputError, run


def _tensorboard_scalars(logdir) -> dict:
  """{tag: {step: value}} read back from the TFRecord event files in `logdir`."""
  import glob
  import struct
  from tensorboardX.proto import event_pb2
  out = {}
  for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for v in event.summary.value:
        out.setdefault(v.tag, {})[event.step] = v.simple_value
  return out


def test_runlocal_writes_tensorboard_events(run_dir):
  pytest.importorskip("tensorboardX")
  rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
  scalars = _tensorboard_scalars(os.path.join(run_dir, "tensorboard"))
  assert {"train_loss", "val_loss", "val_mse"} <= set(scalars)
  assert scalars["val_loss"] == pytest.approx({r["epoch"]: r["val_loss"] for r in rows},
                                              rel=1e-6)


def test_runlocal_writes_valid_files(run_dir):
  for name in ("config.json", "run.json", "image.png", "thumbnail.png", "metrics.jsonl",
               "loss_curve.png", "val_grid.png"):
    assert os.path.exists(os.path.join(run_dir, name)), name
  rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert all(np.isfinite(r["val_loss"]) and r["val_mse"] < 1 for r in rows)
  info = json.load(open(os.path.join(run_dir, "run.json")))
  assert info["epochs"] == 3 and info["stopped"].startswith("reached")
  assert Image.open(os.path.join(run_dir, "image.png")).size == (100, 100)
  assert Image.open(os.path.join(run_dir, "loss_curve.png")).format == "PNG"
  config, state, image, _ = run.load_run(run_dir)
  assert config.in_channels == 8 and image.shape == (100, 100, 3)
  assert int(state.step) == 9  # 30 train pairs / batch 10 = 3 updates x 3 epochs
  assert os.path.isdir(os.path.join(run_dir, "checkpoints", "best"))


def test_rerun_of_finished_run_changes_nothing(run_dir, photo_path):
  before = params_of(run_dir)
  run.train_and_evaluate(runlocal_config(photo_path), run_dir)
  rows = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
  assert len(rows) == 3
  for a, b in zip(before, params_of(run_dir)):
    np.testing.assert_array_equal(a, b)


def test_resume_equals_uninterrupted(tmp_path, photo_path, run_dir):
  # Stop after 2 epochs (as a kill after the epoch-2 checkpoint would), then resume.
  work = str(tmp_path / "w")
  run.train_and_evaluate(runlocal_config(photo_path, num_epochs=2), work)
  info = run.train_and_evaluate(runlocal_config(photo_path), work)
  assert info["epochs"] == 3
  for a, b in zip(params_of(run_dir), params_of(work)):
    np.testing.assert_array_equal(a, b)
  rows = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
  ref = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
  assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in ref]


def test_changed_config_in_same_workdir_is_refused(run_dir, photo_path):
  with pytest.raises(InputError, match="different config"):
    run.train_and_evaluate(runlocal_config(photo_path, width=0.25), run_dir)


def test_a_run_written_before_a_config_field_existed_resumes(tmp_path, photo_path):
  # config.json of a run made before `layer` existed: the field's default is what it
  # meant, so a config with the default resumes it and one with another value does not.
  work = str(tmp_path / "w")
  run.train_and_evaluate(runlocal_config(photo_path, num_epochs=1), work)
  path = os.path.join(work, "config.json")

  def drop_layer():
    old = json.load(open(path))
    del old["layer"]
    json.dump(old, open(path, "w"))

  drop_layer()
  config, _, _, _ = run.load_run(work)
  assert config.layer == "auto"
  assert run.train_and_evaluate(runlocal_config(photo_path, num_epochs=2), work)["epochs"] == 2
  drop_layer()
  with pytest.raises(InputError, match=r"different config \(layer\)"):
    run.train_and_evaluate(runlocal_config(photo_path, layer="stock"), work)


def test_load_run_reads_checkpoint_and_needs_run_json(tmp_path, photo_path):
  work = str(tmp_path / "w")
  run.train_and_evaluate(runlocal_config(photo_path, num_epochs=1), work)
  config, state, image, info = run.load_run(work)
  assert info["crop_box"] == [0, 0, 120] and int(state.step) == 3
  os.remove(os.path.join(work, "run.json"))
  with pytest.raises(InputError, match="run.json"):
    run.load_run(work)


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path, photo_path):
  work = str(tmp_path / "w")
  run.train_and_evaluate(runlocal_config(photo_path, num_epochs=2), work)
  with open(os.path.join(work, "metrics.jsonl"), "a") as f:
    f.write('{"epoch": 3, "train_lo')  # a kill in the middle of a write
  info = run.train_and_evaluate(runlocal_config(photo_path), work)
  rows = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
  assert info["epochs"] == 3 and [r["epoch"] for r in rows] == [1, 2, 3]


def test_resume_through_an_epoch_whose_best_checkpoint_exists(tmp_path, photo_path, run_dir):
  # A kill after epoch 3's best checkpoint, before its latest one: the resumed run
  # reaches epoch 3 again, finds "best" already saved there, and goes on.
  work = str(tmp_path / "w")
  run.train_and_evaluate(runlocal_config(photo_path, checkpoint_every=2), work)
  best = os.path.join(work, "checkpoints", "best")
  assert "3" in os.listdir(best)
  import shutil
  shutil.rmtree(os.path.join(work, "checkpoints", "latest", "3"))
  info = run.train_and_evaluate(runlocal_config(photo_path, checkpoint_every=2), work)
  assert info["epochs"] == 3
  for a, b in zip(params_of(run_dir), params_of(work)):
    np.testing.assert_array_equal(a, b)


def test_a_second_writer_is_refused(tmp_path, photo_path):
  work = str(tmp_path / "w")
  os.makedirs(work)
  with run._exclusive(work):
    with pytest.raises(InputError, match="in use by another run"):
      run.train_and_evaluate(runlocal_config(photo_path), work)
  assert os.listdir(work) == [".lock"]  # nothing else written


def test_bad_config_values_write_nothing(tmp_path, photo_path):
  work = str(tmp_path / "w")
  for bad, message in ((dict(batch_size=1000), "larger than the 30 training pairs"),
                       (dict(width=0.0), "width"), (dict(learning_rate=-1.0), "learning_rate"),
                       (dict(train_fraction=1.5), "train_fraction"), (dict(in_channels=0), "in_channels"),
                       (dict(num_samples=1), "num_samples")):
    with pytest.raises(InputError, match=message):
      run.train_and_evaluate(runlocal_config(photo_path, **bad), work)
  assert not os.path.exists(work)


def test_a_full_disk_is_one_input_error_and_no_checkpoint_folder_is_left(tmp_path, photo_path):
  mount = tmp_path / "small"
  mount.mkdir()
  ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                      capture_output=True).returncode == 0
  if not ok:
    pytest.skip("needs root to mount a small tmpfs")
  try:
    work = str(mount / "w")
    with pytest.raises(InputError, match="no space left for a checkpoint"):
      run.train_and_evaluate(runlocal_config(photo_path), work)
    for kind in ("latest", "best"):
      assert not [n for n in os.listdir(os.path.join(work, "checkpoints", kind))
                  if "tmp" in n]
  finally:
    subprocess.run(["umount", str(mount)], check=False)
