"""Entry-point plumbing: user errors end as one line on stderr and exit code 2."""
import logging as std_logging
import os
import sys

from absl import app
from absl import logging as absl_logging

from singleseg_jax.errors import InputError


def _guarded(main):
  def wrapper(argv):
    try:
      return main(argv)
    except InputError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
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
  """absl's app.run with one-line errors for bad input."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  app.call_after_init(lambda: _quiet_libraries(None))
  app.run(_guarded(main))
