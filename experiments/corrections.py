"""Clicks to reach an IoU: python -m experiments.corrections --data_dir=DIR --out=OUT

Simulates corrections after a sloppy outline (a click at the centre of the largest
error, add or remove) on every image of DIR and reports NoC@85, NoC@90 and IoU after
each click for GrabCut, the snap + GrabCut hybrid and the snap net given the same
clicks (`singleseg_jax.evaluation.corrections` describes the protocol and the files).
"""
import sys

from absl import flags
from ml_collections import config_flags

from experiments import cli
from singleseg_jax.evaluation import corrections

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "experiments/configs/evaluate_snap.py",
                                "Fit configuration of the snap net (experiments/configs/*.py).")
cli.define_outline_sweep_flags(d_values=["0"], sigmas=["2"], seeds=1)
flags.DEFINE_list("methods", list(corrections.METHODS), "Methods to run.")
flags.DEFINE_integer("max_clicks", corrections.CAP, "Clicks per outline (the NoC cap).")


def main(argv):
  del argv
  counts = corrections.evaluate_corrections(
      FLAGS.config, FLAGS.data_dir, FLAGS.out, settings=cli.outline_settings(),
      methods=FLAGS.methods,
      crop=FLAGS.crop, max_images=FLAGS.max_images, cap=FLAGS.max_clicks,
      tolerance=FLAGS.bf_tolerance,
      command=" ".join(["python -m experiments.corrections"] + sys.argv[1:]))
  print(f"{FLAGS.out}: {counts['ok']} image(s) done, {counts['not']} skipped or failed; "
        "see summary.md")


if __name__ == "__main__":
  cli.run(main)
