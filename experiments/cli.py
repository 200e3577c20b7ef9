"""Entry-point plumbing: user errors end as one line on stderr and exit code 2; glibc
asked to keep freed memory; joining JAX's multi-controller runtime from the environment;
an optional re-exec with stronger glibc allocator settings for speed runs."""
import logging as std_logging
import os
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging

from singleseg_jax import memory
from singleseg_jax.errors import InputError


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _is_config_flag(flag) -> bool:
  return any("config_filename" in vars(c) for c in type(flag).__mro__)


def _config_files(argv):
  """(flag name, config file path) for every config-file flag, as given or by default."""
  given = {}
  for arg in argv[1:]:
    name, _, value = arg.lstrip("-").partition("=")
    if value and name in flags.FLAGS and _is_config_flag(flags.FLAGS[name]):
      given[name] = value
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if name not in given and _is_config_flag(flag) and isinstance(flag.default, str):
      given[name] = flag.default
  return [(name, path.split(":", 1)[0]) for name, path in given.items() if path]


def _parse_flags(argv):
  """absl's flag parsing with every mistake as one `error:` line and exit code 2: an
  unknown flag or config field, a value of the wrong type, a missing required flag,
  a config file that does not exist."""
  for name, path in _config_files(argv):
    if not os.path.isfile(path):
      _fail(f"--{name}: config file not found: {path}")
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:  # ml_collections: an override of no field
    _fail(f"unknown config field {str(e).strip(chr(34) + chr(39))!r} (see the config file "
          "for the fields there are)")
  except (OSError, SyntaxError, ValueError) as e:  # a config file that does not load
    _fail(f"cannot load the config: {str(e).splitlines()[0]}")


def _guarded(main):
  def wrapper(argv):
    try:
      return main(argv)
    except InputError as e:
      _fail(str(e))
    except OSError as e:  # read-only folder, full disk, busy port: a fact of the machine
      where = f" ({e.filename})" if e.filename else ""
      _fail(f"{e.strerror or e}{where}")
    except KeyboardInterrupt:
      print("interrupted: rerun the same command to resume", file=sys.stderr)
      sys.exit(130)
  return wrapper


#: Libraries whose INFO lines are noise to a user: orbax logs every save, and JAX's
#: backend lookup logs that there is no TPU plugin on every CPU start.
_QUIET_PATHS = ("/orbax/", "/jax/_src/xla_bridge")


def _quiet_libraries(argv):
  """Keeps library INFO lines out of the progress log (warnings still show)."""
  del argv
  absl_logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= std_logging.WARNING
      or not any(p in r.pathname for p in _QUIET_PATHS))


def run(main):
  """absl's app.run with one-line errors for bad input, and glibc asked to keep freed
  memory (`memory.keep_freed_memory`)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  memory.keep_freed_memory()
  app.call_after_init(lambda: _quiet_libraries(None))
  app.run(_guarded(main), flags_parser=_parse_flags)


#: The environment that makes a main one process of several (`initialize_distributed`).
COORDINATOR_ENV = "SINGLESEG_COORDINATOR"
NUM_PROCESSES_ENV = "SINGLESEG_NUM_PROCESSES"
PROCESS_ID_ENV = "SINGLESEG_PROCESS_ID"


def initialize_distributed() -> bool:
  """Joins JAX's multi-controller runtime when SINGLESEG_COORDINATOR is set; returns
  whether it did. `host:port` (process 0's address) needs SINGLESEG_NUM_PROCESSES and
  SINGLESEG_PROCESS_ID; `auto` lets JAX find all three (a TPU pod slice, SLURM, Open
  MPI). Call it before anything touches a device. CPU meshes across processes need
  JAX's CPU collectives (gloo), which the tested jax enables by default."""
  coordinator = os.environ.get(COORDINATOR_ENV, "")
  if not coordinator:
    return False
  if coordinator == "auto":
    try:
      jax.distributed.initialize()
    except ValueError as e:  # no cluster environment that JAX knows
      raise InputError(f"{COORDINATOR_ENV}=auto: {str(e).splitlines()[0]}") from None
    return True
  try:
    num, pid = int(os.environ[NUM_PROCESSES_ENV]), int(os.environ[PROCESS_ID_ENV])
  except (KeyError, ValueError):
    raise InputError(f"{COORDINATOR_ENV}={coordinator} needs integer {NUM_PROCESSES_ENV} and "
                     f"{PROCESS_ID_ENV}") from None
  if not (num >= 1 and 0 <= pid < num) or ":" not in coordinator:
    raise InputError(f"{COORDINATOR_ENV} must be host:port, {PROCESS_ID_ENV} in "
                     f"[0, {NUM_PROCESSES_ENV}); got {coordinator}, {pid} of {num}")
  jax.distributed.initialize(coordinator, num, pid)
  return True


#: glibc settings for `reexec_with_malloc_env`, a stronger form of what every main does
#: (`memory.keep_freed_memory`; docs/speed.md has the counts): XLA:CPU allocates a large
#: temporary buffer on every call, which glibc by default maps afresh and unmaps on free.
#: One arena and no mmap keep the buffer on the heap, which is never trimmed; huge
#: pages (glibc >= 2.35) cover what is still mapped. (MALLOC_MMAP_THRESHOLD_ alone does
#: not help: glibc caps it at 32 MB.) The same variables can be set for any command:
#:   env MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=8589934592 \
#:       MALLOC_TOP_PAD_=268435456 GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python -m ...
MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(8 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}
MALLOC_TUNABLES = "glibc.malloc.hugetlb=1"
_TUNED_MARK = "SINGLESEG_BENCH_MALLOC_TUNED"


def malloc_tuned() -> bool:
  """Whether this process was re-executed with MALLOC_ENV."""
  return os.environ.get(_TUNED_MARK) == "1"


def malloc_env() -> dict[str, str]:
  """This process's environment with MALLOC_ENV and MALLOC_TUNABLES added."""
  env = dict(os.environ, **MALLOC_ENV)
  tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
  if MALLOC_TUNABLES not in tunables:
    tunables.append(MALLOC_TUNABLES)
  env["GLIBC_TUNABLES"] = ":".join(tunables)
  return env


def reexec_with_malloc_env() -> None:
  """Replaces this process by the same command with MALLOC_ENV set (once); call it
  before anything starts JAX's backend threads (`jax.devices()`)."""
  env = dict(malloc_env(), **{_TUNED_MARK: "1"})
  argv = list(getattr(sys, "orig_argv", [sys.executable] + sys.argv))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + argv[1:], env)


def define_outline_sweep_flags(d_values, sigmas, seeds: int) -> None:
  """The flags of the mains that simulate outlines on a directory of images
  (`evaluate`, `corrections`), with their own default sweep."""
  from singleseg_jax.evaluation import protocol  # noqa: PLC0415 (only these mains need it)
  from singleseg_jax.image import CROPS  # noqa: PLC0415

  flags.DEFINE_string("data_dir", None, "Directory with images/ and masks/.")
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_enum("crop", "center", list(CROPS), "Square crop of each image.")
  flags.DEFINE_list("d_values", list(d_values),
                    "Outline offsets in pixels at 100x100 (negative: inside the object).")
  flags.DEFINE_list("sigmas", list(sigmas), "Vertex jitter (pixels at 100x100).")
  flags.DEFINE_list("vertices", ["20"], "Vertices kept per outline (0: every traced vertex).")
  flags.DEFINE_integer("seeds", seeds, "Outlines per (d, sigma, vertices) setting.")
  flags.DEFINE_integer("max_images", 0, "At most this many images (0: all).")
  flags.DEFINE_float("bf_tolerance", protocol.BF_TOLERANCE,
                     "Boundary F tolerance in pixels at 100x100 (x side/100 at full size).")
  flags.mark_flags_as_required(["data_dir", "out"])


def outline_settings():
  """The outline settings the sweep flags name."""
  from singleseg_jax.evaluation import dataset  # noqa: PLC0415

  f = flags.FLAGS
  return dataset.outline_settings(f.d_values, f.sigmas, f.vertices, f.seeds)

