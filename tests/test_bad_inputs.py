"""The bad-input battery: every case of every entry point ends with exit code 2, exactly
one stderr line starting with `error:`, and nothing written (the workdir and the output
folder listed byte for byte before and after)."""
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT

RUNLOCAL = "--config=experiments/configs/default.py:runlocal"


def _listing(*roots) -> dict:
  """{path: sha256} of every file below the roots (missing roots list as absent)."""
  out = {}
  for root in roots:
    if not os.path.exists(root):
      out[root] = "absent"
      continue
    for folder, _, names in os.walk(root):
      for n in names:
        p = os.path.join(folder, n)
        out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
  return out


def _run_cases(module, cases):
  path = os.path.join(tempfile.mkdtemp(), f"{module}.json")  # outside every listed folder
  with open(path, "w") as f:
    json.dump(cases, f)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "cli_cases.py"), module,
                         path], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _png_with_header(path, width, height, rows):
  """A PNG whose header declares width x height but whose data holds `rows` rows."""
  Image.fromarray(np.full((rows, width, 3), 200, np.uint8)).save(path)
  b = bytearray(open(path, "rb").read())
  b[16:24] = struct.pack(">II", width, height)
  b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
  open(path, "wb").write(bytes(b))


@pytest.fixture(scope="module")
def files(tmp_path_factory, photo):
  d = tmp_path_factory.mktemp("bad")
  Image.fromarray(photo).save(d / "photo.png")
  (d / "notes.txt").write_text("not an image")
  b = open(d / "photo.png", "rb").read()
  (d / "cut.png").write_bytes(b[:len(b) // 2])
  _png_with_header(d / "short.png", 160, 240, 120)
  _png_with_header(d / "bomb.png", 100000, 100000, 2)
  Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(d / "tiny.png")
  (d / "bad.json").write_text(json.dumps({"polygon": "nope"}))
  (d / "deg.json").write_text(json.dumps([[1, 1], [5, 5], [9, 9]]))
  Image.fromarray(np.zeros((7, 9), np.uint8)).save(d / "wrong.png")
  (d / "a_file").write_text("x")
  (d / "empty_dir").mkdir()
  return d


def _check(results, cases, expect, listings):
  for argv, got, want, (before, after) in zip(cases, results, expect, listings):
    lines = got["stderr"].strip().splitlines()
    assert got["code"] == 2, (argv, got)
    assert len(lines) == 1 and lines[0].startswith("error:"), (argv, got["stderr"])
    assert want in lines[0], (argv, lines[0], want)
    assert before == after, argv


def test_main_bad_inputs(tmp_path, files, run_dir):
  other = tmp_path / "other_run"
  shutil.copytree(run_dir, other)  # a run with another config (the photo, 3 epochs)
  f = files
  table = [
      ([RUNLOCAL, "--config.nonexistent=1"], "unknown config field 'nonexistent'"),
      (["--config=no_such.py"], "config file not found"),
      ([RUNLOCAL, "--config.num_epochs=abc"], "num_epochs"),
      ([RUNLOCAL, "--config.batch_size=1000"], "larger than the 30 training pairs"),
      ([RUNLOCAL, "--config.batch_size=0"], "batch_size"),
      ([RUNLOCAL, "--config.microbatch=3"], "microbatch 3 does not divide batch_size 10"),
      ([RUNLOCAL, "--config.width=0"], "width"),
      ([RUNLOCAL, "--config.in_channels=0"], "in_channels"),
      ([RUNLOCAL, "--config.learning_rate=-1"], "learning_rate"),
      ([RUNLOCAL, "--config.l2=-1"], "l2"),
      ([RUNLOCAL, "--config.train_fraction=1.5"], "train_fraction"),
      ([RUNLOCAL, "--config.num_samples=1"], "num_samples"),
      ([RUNLOCAL, "--config.variant=unet"], "variant must be one of"),
      ([RUNLOCAL, "--config.dtype=float16"], "dtype"),
      ([RUNLOCAL, "--config.crop=middle"], "crop"),
      ([RUNLOCAL, "--config.size=0"], "size must be"),
      ([RUNLOCAL, "--config.scale=0.6"], "at most half"),
      ([RUNLOCAL, "--config.variant=snap", "--config.size=200"], "size 100 only"),
      ([RUNLOCAL, "--config.patience=0"], "patience"),
      ([RUNLOCAL, "--config.rel_tol=2"], "rel_tol"),
      ([RUNLOCAL, "--config.num_epochs=0"], "num_epochs"),
      ([RUNLOCAL, "--config.variant=snap", "--config.snap_hidden=0"], "snap_hidden"),
      ([RUNLOCAL, "--config.variant=encdec", "--config.encdec_layers=0"], "encdec_layers"),
      ([RUNLOCAL, f"--config.image={f / 'missing.jpg'}"], "image not found"),
      ([RUNLOCAL, f"--config.image={f / 'empty_dir'}"], "is a directory"),
      ([RUNLOCAL, f"--config.image={f / 'notes.txt'}"], "cannot read image"),
      ([RUNLOCAL, f"--config.image={f / 'cut.png'}"], "truncated"),
      ([RUNLOCAL, f"--config.image={f / 'short.png'}"], "fewer rows"),
      ([RUNLOCAL, f"--config.image={f / 'bomb.png'}"], "too large"),
      ([RUNLOCAL, f"--config.image={f / 'tiny.png'}"], "too small"),
  ]
  cases, expect = [], []
  for i, (args, want) in enumerate(table):
    args = args + [f"--workdir={tmp_path / f'w{i}'}"]
    if not any(a.startswith("--config.image") for a in args):
      args.append(f"--config.image={f / 'photo.png'}")
    cases.append(args)
    expect.append(want)
  cases += [[RUNLOCAL, f"--config.image={f / 'photo.png'}", "--config.width=0.25",
             f"--workdir={other}"],                                       # another config
            [RUNLOCAL, f"--config.image={f / 'photo.png'}", f"--workdir={f / 'a_file'}"],
            [RUNLOCAL, f"--config.image={f / 'photo.png'}"]]               # no --workdir
  expect += ["different config", "is a file", "--workdir"]
  roots = [[str(tmp_path / f"w{i}")] for i in range(len(table))] + [[str(other)], [str(f)],
                                                                     [str(tmp_path)]]
  befores = [_listing(*r) for r in roots]
  results = _run_cases("experiments.main", cases)
  _check(results, cases, expect, list(zip(befores, [_listing(*r) for r in roots])))


def test_segment_bad_inputs(tmp_path, files, run_dir):
  f = files
  broken_config = tmp_path / "broken_config"
  shutil.copytree(run_dir, broken_config)
  text = (broken_config / "config.json").read_text()
  (broken_config / "config.json").write_text(text[:len(text) // 2])
  no_image = tmp_path / "no_image"
  shutil.copytree(run_dir, no_image)
  os.remove(no_image / "image.png")
  out = tmp_path / "out"
  w = f"--workdir={run_dir}"
  table = [
      (["--workdir=/no/such/run", "--box=1,1,50,50"], "workdir not found"),
      ([f"--workdir={f / 'empty_dir'}", "--box=1,1,50,50"], "not a run directory"),
      ([f"--workdir={broken_config}", "--box=1,1,50,50"], "config.json is not readable"),
      ([f"--workdir={no_image}", "--box=1,1,50,50"], "image not found"),
      ([w, "--box=1,2,3"], "x0,y0,x1,y1"),
      ([w, "--box=50,50,10,10"], "x0 < x1"),
      ([w, "--box=0,0,150,50"], "(150, 0) lies outside the 100x100 image"),
      ([w, f"--outline={f / 'missing.json'}"], "cannot read outline"),
      ([w, f"--outline={f / 'missing.png'}"], "outline not found"),
      ([w, f"--outline={f / 'bad.json'}"], "expected [[x, y]"),
      ([w, f"--outline={f / 'deg.json'}"], "degenerate"),
      ([w, f"--outline={f / 'wrong.png'}"], "expected 100x100"),
      ([w, f"--outline={f / 'notes.txt'}"], "cannot read outline"),
      ([w, "--box=10,10,60,60", "--zoom=0"], "zoom"),
      ([w, "--box=10,10,60,60", "--zoom=-2"], "zoom"),
      ([w, "--box=10,10,60,60", "--refine=grabcut"], "refines only snap"),
      ([w, "--frame=original", "--box=0,0,150,50"], "outside the cropped square"),
      ([w, "--box=10,10,60,60", "--checkpoint=middle"], "checkpoint"),
      ([w, "--box=10,10,60,60", "--frame=screen"], "frame"),
      ([w], "at least one"),
      ([w, "--box=10,10,60,60", f"--out={f / 'a_file'}"], "is a file"),
      (["--box=10,10,60,60"], "--workdir"),
  ]
  cases = [args + ([] if any(a.startswith("--out") for a in args) else [f"--out={out}"])
           for args, _ in table]
  roots = [str(run_dir), str(out), str(f), str(broken_config), str(no_image)]
  before = _listing(*roots)
  results = _run_cases("experiments.segment", cases)
  after = _listing(*roots)
  _check(results, cases, [want for _, want in table], [(before, after)] * len(cases))


def test_serve_bad_inputs(tmp_path, files):
  busy = socket.socket()
  busy.bind(("127.0.0.1", 0))
  busy.listen(1)
  port = busy.getsockname()[1]
  f = files
  table = [
      ([], "give --workdir"),
      (["--port=99999", f"--workdir={tmp_path / 'w'}"], "port"),
      ([f"--image={f / 'missing.jpg'}", f"--workdir={tmp_path / 'w'}", "--port=0"],
       "image not found"),
      ([f"--workdir={f / 'empty_dir'}", "--port=0"], "not a run directory"),
      ([f"--workdir={tmp_path / 'w'}", f"--port={port}"], "already in use"),
      ([f"--image={f / 'photo.png'}", f"--workdir={tmp_path / 'w'}", "--port=0",
        "--config.batch_size=0"], "batch_size"),
  ]
  try:
    before = _listing(str(tmp_path / "w"), str(f))
    results = _run_cases("experiments.serve", [a for a, _ in table])
    after = _listing(str(tmp_path / "w"), str(f))
  finally:
    busy.close()
  _check(results, [a for a, _ in table], [w for _, w in table], [(before, after)] * len(table))


def test_corrections_bad_inputs(tmp_path, files, photo):
  data = tmp_path / "data"
  os.makedirs(data / "images")
  os.makedirs(data / "masks")
  Image.fromarray(photo).save(data / "images" / "p.png")
  Image.fromarray(np.zeros(photo.shape[:2], np.uint8)).save(data / "masks" / "p.png")
  old = tmp_path / "old"  # a run made with other flags
  old.mkdir()
  for name, text in (("run.json", "{}"), ("clicks.csv", "image\n"), ("noc.csv", "image\n")):
    (old / name).write_text(text)
  out = f"--out={tmp_path / 'o'}"
  d = f"--data_dir={data}"
  table = [
      ([d, out, "--max_clicks=0"], "max_clicks"),
      ([d, out, "--methods=click"], "unknown method"),
      ([d, out, "--config=experiments/configs/evaluate.py", "--methods=snap"],
       "need a snap config"),
      ([d, out, "--sigmas=-1"], "--sigmas must be >= 0"),
      ([d, out, "--bf_tolerance=-1"], "bf_tolerance"),
      ([d, out, "--config.num_epochs=0"], "num_epochs"),
      ([f"--data_dir={files}", out], "no images/ directory"),
      ([d, f"--out={files / 'a_file'}"], "is a file"),
      ([d, f"--out={old}"], "other flags"),
      ([d], "--out"),
  ]
  cases = [a for a, _ in table]
  roots = [str(tmp_path / "o"), str(old), str(files)]
  before = _listing(*roots)
  results = _run_cases("experiments.corrections", cases)
  _check(results, cases, [w for _, w in table], [(before, _listing(*roots))] * len(table))
