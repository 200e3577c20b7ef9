"""Fits the net to one image: python -m experiments.main --config=... --workdir=..."""
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli
from singleseg_jax import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and figures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  info = run.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  logging.info("done: %s", info)
  print(f"{FLAGS.workdir}: {info['epochs']} epochs, best val loss {info['best_val_loss']:.4g} "
        f"(epoch {info['best_epoch']}); {info['stopped']}")


if __name__ == "__main__":
  cli.run(main)
