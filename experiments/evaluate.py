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
from singleseg_jax.image import CROPS

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "experiments/configs/evaluate.py",
                                "Fit configuration (experiments/configs/*.py).")
flags.DEFINE_string("data_dir", None, "Directory with images/ and masks/.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_enum("crop", "center", list(CROPS), "Square crop of each image.")
flags.DEFINE_list("d_values", ["-6", "-4", "-2", "0", "2", "4", "6", "8"],
                  "Outline offsets in pixels at 100x100 (negative: inside the object).")
flags.DEFINE_list("sigmas", ["0", "2"], "Vertex jitter (pixels at 100x100).")
flags.DEFINE_list("vertices", ["20"], "Vertices kept per outline (0: every traced vertex).")
flags.DEFINE_integer("seeds", 3, "Outlines per (d, sigma, vertices) setting.")
flags.DEFINE_integer("max_images", 0, "Evaluate at most this many images (0: all).")
flags.DEFINE_list("methods", list(protocol.METHODS), "Methods to run.")
flags.DEFINE_float("bf_tolerance", protocol.BF_TOLERANCE,
                   "Boundary F tolerance in pixels at 100x100 (x side/100 at full size).")
flags.DEFINE_integer("grabcut_iterations", baselines.DEFAULT_ITERATIONS, "GrabCut iterations.")
flags.DEFINE_float("trimap_band", baselines.DEFAULT_BAND,
                   "GrabCut's probable-background band in pixels at 100x100 (x side/100 at "
                   "full size).")
flags.mark_flags_as_required(["data_dir", "out"])


def main(argv):
  del argv
  settings = dataset.outline_settings(FLAGS.d_values, FLAGS.sigmas, FLAGS.vertices, FLAGS.seeds)
  counts = dataset.evaluate_dataset(
      FLAGS.config, FLAGS.data_dir, FLAGS.out, settings=settings, methods=FLAGS.methods,
      crop=FLAGS.crop, max_images=FLAGS.max_images, tolerance=FLAGS.bf_tolerance,
      iterations=FLAGS.grabcut_iterations, band=FLAGS.trimap_band,
      command=" ".join(["python -m experiments.evaluate"] + sys.argv[1:]))
  print(f"{FLAGS.out}: {counts['ok']} image(s) evaluated, {counts['skipped']} skipped, "
        f"{counts['failed']} failed; see summary.md")


if __name__ == "__main__":
  cli.run(main)
