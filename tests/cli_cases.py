"""Runs many command lines of one main in one process, as the shell would run each
(flags parsed by experiments.cli, its one-line errors, stderr captured), so the
bad-input battery pays Python's and JAX's start-up once per main instead of once per
case. Usage: python tests/cli_cases.py MODULE CASES.json; prints a JSON list of
{"code": exit code, "stderr": text}."""
import contextlib
import importlib
import io
import json
import sys

from absl import flags
from absl import logging as absl_logging

from experiments import cli


def main():
  name = sys.argv[1]
  module = importlib.import_module(name)
  with open(sys.argv[2]) as f:
    cases = json.load(f)
  cli._quiet_libraries(None)
  handler = absl_logging.get_absl_handler().python_handler
  results = []
  for argv in cases:
    flags.FLAGS.unparse_flags()
    for flag_name in [n for n in flags.FLAGS if "." in n]:  # the last case's config overrides
      delattr(flags.FLAGS, flag_name)
    sys.argv = [sys.argv[0]] + argv  # config_flags reads its overrides from sys.argv
    err = io.StringIO()
    handler.stream = err
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
      try:
        remaining = cli._parse_flags([name] + argv)
        cli._guarded(module.main)(remaining)
      except SystemExit as e:
        code = e.code
    results.append({"code": code, "stderr": err.getvalue()})
  handler.stream = sys.stderr
  print(json.dumps(results))


if __name__ == "__main__":
  main()
