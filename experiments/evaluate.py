"""Sloppy-outline evaluation: python -m experiments.evaluate --data_dir=DIR --out=OUT

Fits the config's net to every image of DIR/images, simulates sloppy outlines from
DIR/masks and scores the net beside the baselines (`singleseg_jax.evaluation.dataset`
describes the protocol and the files written to OUT).
"""
import sys

from absl import flags
from ml_collections import config_flags

from experiments import cli
from singleseg_jax.evaluation import baselines, dataset, protocol

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "experiments/configs/evaluate.py",
                                "Fit configuration (experiments/configs/*.py).")
cli.define_outline_sweep_flags(d_values=["-6", "-4", "-2", "0", "2", "4", "6", "8"],
                              sigmas=["0", "2"], seeds=3)
flags.DEFINE_list("methods", list(protocol.METHODS), "Methods to run.")
flags.DEFINE_integer("grabcut_iterations", baselines.DEFAULT_ITERATIONS, "GrabCut iterations.")
flags.DEFINE_float("trimap_band", baselines.DEFAULT_BAND,
                   "GrabCut's probable-background band in pixels at 100x100 (x side/100 at "
                   "full size).")
flags.DEFINE_float("edge_band", baselines.DEFAULT_EDGE_BAND,
                   "How far edgeband_grabcut_full may move the net's boundary, in pixels at "
                   "100x100 (x side/100 at full size).")


def main(argv):
  del argv
  counts = dataset.evaluate_dataset(
      FLAGS.config, FLAGS.data_dir, FLAGS.out, settings=cli.outline_settings(),
      methods=FLAGS.methods, crop=FLAGS.crop, max_images=FLAGS.max_images,
      tolerance=FLAGS.bf_tolerance,
      iterations=FLAGS.grabcut_iterations, band=FLAGS.trimap_band, edge_band=FLAGS.edge_band,
      command=" ".join(["python -m experiments.evaluate"] + sys.argv[1:]))
  print(f"{FLAGS.out}: {counts['ok']} image(s) evaluated, {counts['skipped']} skipped, "
        f"{counts['failed']} failed; see summary.md")


if __name__ == "__main__":
  cli.run(main)
