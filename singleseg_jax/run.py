"""The run directory: one image, one fitted net, its files on disk.

`train_and_evaluate(config, workdir)` fits (or resumes) and writes the directory;
`load_run(workdir)` reads a finished or running one back.

The workdir holds:
  config.json        the config of the run (a rerun must match it, except for
                     num_epochs, checkpoint_every and num_grid)
  run.json           the image's path, crop box, sizes, and how the run ended
  image.png          the prepared size x size image (the seed's 100x100);
                     thumbnail.png its thumbnail (10x10), the net's input side
  metrics.jsonl      one line per epoch: train/val loss (MATLAB's) and MSE, seconds
  checkpoints/latest the newest state (every `checkpoint_every` epochs and at the end)
  checkpoints/best   the state with the lowest val loss
  loss_curve.png     train and val loss per epoch (as the paper's Fig. 4)
  val_grid.png       validation outputs of the best net (top row) above their
                     targets (bottom row), as the paper's Fig. 5 (snap: three rows,
                     the sloppy outline, the output and the target region)

Rerunning the same command after a kill resumes from checkpoints/latest; because the
keys are derived from the seed and the epoch number, the result is the same as an
uninterrupted run's. Orbax writes each checkpoint to a temporary folder and renames it
when complete, so a kill never leaves a broken checkpoint behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from singleseg_jax import figures, tables
from singleseg_jax import image as image_lib
from singleseg_jax.errors import InputError
from singleseg_jax.fit import FitOptions, FitState, TrainingDiverged, fit, init_state
from singleseg_jax.paper.model import count_params
from singleseg_jax.progress import Progress, hms
from singleseg_jax.train import PlateauState, TrainState

#: Config fields that may change between a run and its resumption (none changes what
#: the fit computes).
MUTABLE_FIELDS = ("num_epochs", "checkpoint_every", "num_grid", "epochs_per_sync")
#: FitOptions' defaults: what a config.json written before a field existed meant by it.
_FIT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FitOptions)}


def fit_options(config: ml_collections.ConfigDict) -> FitOptions:
  """The library's options from a config; raises InputError on bad values."""
  # A field the config lacks keeps its default: run directories written before the
  # field existed still load.
  fields = [k for k in FitOptions.__dataclass_fields__ if k in config]
  return FitOptions(**{k: config[k] for k in fields})


def prepare(config) -> tuple[np.ndarray, image_lib.PreparedImage]:
  """Loads and prepares the run's photo; returns (original, prepared)."""
  original = image_lib.load_image(config.image)
  return original, image_lib.prepare_image(original, config.size, config.scale, config.crop)


def _managers(workdir: str, asynchronous: bool = False, create: bool = True):
  # Asynchronous saves let the next block of epochs run while the last one is written
  # (orbax writes to a temporary folder and renames it, so a kill loses no checkpoint).
  opts = dict(max_to_keep=1, create=create, enable_async_checkpointing=asynchronous)
  root = os.path.join(os.path.abspath(workdir), "checkpoints")
  return (ocp.CheckpointManager(os.path.join(root, "latest"),
                                options=ocp.CheckpointManagerOptions(**opts)),
          ocp.CheckpointManager(os.path.join(root, "best"),
                                options=ocp.CheckpointManagerOptions(**opts)))


def _wait(manager) -> None:
  """Waits for the manager's save in flight; a full disk becomes one InputError."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # orbax reports a failed background write as it likes
    if "No space left on device" in str(e):
      raise InputError(f"no space left on the device of {manager.directory}") from None
    raise


def _save(manager, state: FitState):
  _wait(manager)  # the previous save first: its step must be listed, its bytes counted
  if state.epoch in manager.all_steps():
    # A resumed run reaching an epoch the killed run had saved: keys derive from the
    # seed and the epoch, so the state on disk is this one; saving again would fail.
    return
  # Checked here rather than left to orbax, whose background threads would report a
  # full disk in many lines and leave a temporary folder behind.
  need = sum(x.nbytes for x in jax.tree.leaves((state.train.params, state.train.opt_state)))
  need += 1 << 20  # metadata and the file system's blocks
  free = shutil.disk_usage(manager.directory).free
  if free < need:
    raise InputError(f"no space left for a checkpoint in {manager.directory}: about "
                     f"{need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free")
  meta = {"epoch": state.epoch, "plateau": list(state.plateau)}
  manager.save(state.epoch, args=ocp.args.Composite(
      state=ocp.args.StandardSave({"params": state.train.params,
                                   "opt_state": state.train.opt_state,
                                   "step": state.train.step}),
      meta=ocp.args.JsonSave(meta)), force=True)


def _restore(manager, template: TrainState, step: int | None = None):
  step = manager.latest_step() if step is None else step
  target = {"params": template.params, "opt_state": template.opt_state, "step": template.step}
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  got = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  s = got["state"]
  train = template.replace(params=s["params"], opt_state=s["opt_state"], step=s["step"])
  meta = got["meta"]
  return FitState(train, PlateauState(*meta["plateau"]), meta["epoch"]), meta


def config_differences(old: dict, new: dict, ignore=()) -> list[str]:
  """The keys (not in `ignore`) whose values differ between two configs as JSON dicts;
  a key one side lacks counts as its FitOptions default, so a run made before a key
  existed still matches a config that sets the key to its default."""
  return sorted(k for k in set(old) | set(new) if k not in ignore
                and old.get(k, _FIT_DEFAULTS.get(k)) != new.get(k, _FIT_DEFAULTS.get(k)))


def _check_same_run(workdir: str, config) -> None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  diff = config_differences(old, json.loads(config.to_json_best_effort()), MUTABLE_FIELDS)
  if diff:
    raise InputError(f"{workdir} holds a run with a different config ({', '.join(diff)}); "
                        "use a new --workdir")


def read_metrics(workdir: str) -> list[dict]:
  """The rows of workdir/metrics.jsonl, one per epoch, up to a line that is being
  written or that a kill cut short ([] when there is no log yet)."""
  rows = []
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except ValueError:
          break
  return rows


def _truncate_metrics(workdir: str, epochs: int) -> list[dict]:
  """The log's rows up to `epochs`, rewritten atomically (a torn line's epoch, and any
  after the checkpoint, run again)."""
  rows = [r for r in read_metrics(workdir) if r["epoch"] <= epochs]
  tables.atomic_write(os.path.join(workdir, "metrics.jsonl"),
                      "".join(json.dumps(r) + "\n" for r in rows))
  return rows


def _log_epoch(progress: Progress, record: dict, metric: str) -> None:
  logging.info("epoch %d/%d  train %.4g  val %.4g  (val %s %.5f)  %.2f s/epoch  ETA %s "
               "(at most; the plateau rule may stop sooner)", record["epoch"], progress.total,
               record["train_loss"], record["val_loss"], metric, record[f"val_{metric}"],
               progress.seconds_per_unit, hms(progress.eta))


def _tensorboard(workdir: str, start_epoch: int):
  """A tensorboardX writer on workdir/tensorboard (events past `start_epoch` from a killed
  run are purged), or None when tensorboardX is not installed."""
  try:
    from tensorboardX import SummaryWriter  # noqa: PLC0415 (optional dependency)
  except ImportError:
    logging.info("no TensorBoard events: pip install -e '.[tensorboard]' to write them")
    return None
  return SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_epoch + 1)


def load_run(workdir: str, which: str = "best"):
  """(config, TrainState, prepared image as uint8, run.json dict) of a finished or
  running run; raises InputError with a one-line reason if anything is missing."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isdir(workdir):
    raise InputError(f"workdir not found: {workdir}")
  if not os.path.exists(path):
    raise InputError(f"{workdir} is not a run directory (no config.json)")
  try:
    with open(path) as f:
      config = ml_collections.ConfigDict({**_FIT_DEFAULTS, **json.load(f)})
  except (OSError, ValueError, TypeError) as e:
    raise InputError(f"{path} is not readable: {e}") from None
  try:
    with open(os.path.join(workdir, "run.json")) as f:
      info = json.load(f)
  except (OSError, ValueError):
    raise InputError(f"{workdir} has no readable run.json") from None
  root = os.path.join(workdir, "checkpoints")
  if not all(os.path.isdir(os.path.join(root, k)) for k in ("latest", "best")):
    raise InputError(f"{workdir} has no checkpoint yet")
  latest, best = _managers(workdir, create=False)  # reading makes no folders
  try:
    manager = best if which == "best" and best.latest_step() is not None else latest
    if manager.latest_step() is None:
      raise InputError(f"{workdir} has no checkpoint yet")
    template = init_state(jax.random.key(config.seed), fit_options(config))
    state, _ = _restore(manager, template)
  finally:
    latest.close()
    best.close()
  image = image_lib.load_image(os.path.join(workdir, "image.png"))
  if image.shape[:2] != (config.size, config.size):
    raise InputError(f"{workdir}/image.png is {image.shape[1]}x{image.shape[0]}, not the "
                     f"run's {config.size}x{config.size}")
  return config, state.train, image, info


def _check_writable(workdir: str) -> None:
  """InputError naming the folder when `workdir` (or the nearest folder above it that
  exists) cannot be written, before anything is."""
  folder = os.path.abspath(workdir)
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise InputError(f"--workdir {workdir}: {folder} is a file, not a folder")
  if not os.access(folder, os.W_OK | os.X_OK):
    raise InputError(f"--workdir {workdir}: {folder} is not writable")


@contextlib.contextmanager
def _exclusive(workdir: str):
  """Holds the workdir's lock; a second writer gets one clear line instead of a race."""
  f = open(os.path.join(workdir, ".lock"), "a")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise InputError(f"{workdir} is in use by another run: wait for it to end or use "
                     "another --workdir") from None
  try:
    yield
  finally:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Fits the config's net to its image in `workdir` (resuming if it holds a run);
  returns run.json's dict. Everything is checked before anything is written."""
  options = fit_options(config)
  original, prep = prepare(config)
  _check_writable(workdir)
  os.makedirs(workdir, exist_ok=True)
  with _exclusive(workdir):
    return _train_and_evaluate(config, workdir, options, original, prep)


def _train_and_evaluate(config, workdir: str, options: FitOptions, original, prep) -> dict:
  _check_same_run(workdir, config)
  tables.atomic_write(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))
  figures.save_png(prep.image, os.path.join(workdir, "image.png"))
  figures.save_png(prep.thumbnail, os.path.join(workdir, "thumbnail.png"))
  info_path = os.path.join(workdir, "run.json")
  info = {"image": os.path.abspath(config.image), "original_hw": list(original.shape[:2]),
          "crop_box": list(prep.crop_box), "device": str(jax.devices()[0].device_kind),
          "params": None, "stopped": None}

  key = jax.random.key(config.seed)
  latest, best = _managers(workdir, asynchronous=True)
  try:
    template = init_state(key, options)
    info["params"] = count_params(template.model())
    if not os.path.exists(info_path):  # so a running or killed run can already be used
      tables.atomic_write(info_path, json.dumps(info, indent=2))
    resume = None
    if latest.latest_step() is not None:
      resume, _ = _restore(latest, template)
      logging.info("resuming %s from epoch %d", workdir, resume.epoch)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    history = _truncate_metrics(workdir, resume.epoch if resume else 0)

    progress = Progress(options.num_epochs, resume.epoch if resume else 0)
    metric = options.variant_impl.metric
    metrics_file = open(metrics_path, "a")
    board = _tensorboard(workdir, resume.epoch if resume else 0)
    t_sync = [time.perf_counter()]
    pending, last = [], [resume]
    host = [0.0]  # seconds spent in on_sync: logging, metrics, checkpoints

    def on_sync(state: FitState, new_best) -> None:
      """Logs the block's epochs (each given its share of the block's wall time), then
      saves "best" when the block improved on it and "latest" every checkpoint_every."""
      t0 = time.perf_counter()
      first = last[0].epoch if last[0] is not None else 0
      for record in pending:
        record["seconds"] = round((t0 - t_sync[0]) / len(pending), 3)
        metrics_file.write(json.dumps(record) + "\n")
        if board is not None:
          for name, value in record.items():
            if name != "epoch":
              board.add_scalar(name, value, record["epoch"])
        history.append(record)
        progress.update(record["epoch"])
        _log_epoch(progress, record, metric)
      pending.clear()
      metrics_file.flush()
      if new_best is not None:
        _save(best, new_best)
      if state.epoch // config.checkpoint_every > first // config.checkpoint_every:
        _save(latest, state)
      last[0] = state
      host[0] += time.perf_counter() - t0
      t_sync[0] = time.perf_counter()

    t0 = time.perf_counter()
    try:
      state, stop_reason = fit(key, prep.image, options, resume=resume,
                               on_epoch=pending.append, on_sync=on_sync)
    except TrainingDiverged as e:
      kept = (f"the last good checkpoints are kept in {workdir}/checkpoints"
              if latest.latest_step() is not None or best.latest_step() is not None
              else "no epoch finished, so there is no checkpoint")
      raise InputError(f"training diverged ({e}); {kept}; try a lower learning_rate") from None
    except KeyboardInterrupt:
      if last[0] is not None and last[0].epoch != latest.latest_step():
        _save(latest, last[0])
      raise
    finally:
      for manager in (latest, best):
        _wait(manager)
      metrics_file.close()
      if board is not None:
        board.close()
    if latest.latest_step() != state.epoch:
      _save(latest, state)
      _wait(latest)
    info["train_seconds"] = round(time.perf_counter() - t0, 2)
    info["host_seconds"] = round(host[0], 2)  # logging and checkpoints, outside the device loop
    info["epochs_per_sync"] = options.epochs_per_sync
    logging.info("stopped after %d epochs: %s", state.epoch, stop_reason)

    info["stopped"] = stop_reason
    info["epochs"] = state.epoch
    info["best_epoch"] = state.plateau.best_epoch + 1
    info["best_val_loss"] = state.plateau.best
    tables.atomic_write(info_path, json.dumps(info, indent=2))

    best_state, _ = _restore(best, template)
    figures.loss_curve(history, os.path.join(workdir, "loss_curve.png"))
    columns = options.variant_impl.val_columns(key, prep.image, options, best_state.train,
                                               config.num_grid)
    figures.image_grid(columns, os.path.join(workdir, "val_grid.png"))
    return info
  finally:
    latest.close()
    best.close()
