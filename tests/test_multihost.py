"""JAX's multi-controller runtime for real: two processes of two CPU devices each on
127.0.0.1 against one process of four."""
import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, TEST_XLA_FLAGS, cli, disc


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(args, devices, extra_env=None):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra_env or {}))
  return subprocess.Popen([sys.executable, "-m", "experiments.ablate_width", *args], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rows(path):
  return list(csv.DictReader(open(path)))


def test_two_processes_give_the_results_of_one_with_all_devices(tmp_path, photo_path):
  Image.fromarray(disc(120, 160, 55, 50, 30).astype(np.uint8) * 255).save(tmp_path / "gt.png")
  args = ["--config=experiments/configs/default.py:runlocal", f"--config.image={photo_path}",
          "--config.num_epochs=3", "--widths=0.03125", "--seeds=3", "--together=vmap",
          f"--mask={tmp_path / 'gt.png'}", "--eval_d_values=0", "--eval_sigmas=0"]
  port = _free_port()
  procs = [_start(args + [f"--out={tmp_path / f'multi{i}'}"], 2,
                  {"SINGLESEG_COORDINATOR": f"127.0.0.1:{port}",
                   "SINGLESEG_NUM_PROCESSES": "2", "SINGLESEG_PROCESS_ID": str(i)})
           for i in range(2)]
  procs.append(_start(args + [f"--out={tmp_path / 'single'}"], 4))
  try:
    outs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  multi, single = _rows(tmp_path / "multi0" / "ablation.csv"), _rows(tmp_path / "single" /
                                                                      "ablation.csv")
  assert not (tmp_path / "multi1").exists()  # process 0 writes the shared tables
  for out, processes in (("multi0", 2), ("single", 1)):
    meta = json.loads((tmp_path / out / "ablation.json").read_text())
    assert (meta["processes"], meta["devices"]) == (processes, 4)
  assert [r["seed"] for r in multi] == ["0", "1", "2"]
  for m, s in zip(multi, single):
    assert (m["epochs"], m["stopped"], m["seeds_trained"]) == (s["epochs"], s["stopped"], "vmap")
    for k in ("best_val_loss", "iou_full", "bf_full"):
      assert float(m[k]) == pytest.approx(float(s[k]), rel=1e-5), k


def test_a_half_configured_process_group_is_one_line(tmp_path, photo_path, monkeypatch):
  monkeypatch.setenv("SINGLESEG_COORDINATOR", "127.0.0.1:1")
  res = cli("experiments.ablate_width", "--config=experiments/configs/default.py:runlocal",
            f"--config.image={photo_path}", f"--out={tmp_path}")
  assert res.returncode == 2, res.stderr[-2000:]
  assert "SINGLESEG_NUM_PROCESSES" in res.stderr and "Traceback" not in res.stderr
