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
from singleseg_jax.evaluation import corrections, dataset, protocol
from singleseg_jax.image import CROPS

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "experiments/configs/evaluate_snap.py",
                                "Fit configuration of the snap net (experiments/configs/*.py).")
flags.DEFINE_string("data_dir", None, "Directory with images/ and masks/.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_enum("crop", "center", list(CROPS), "Square crop of each image.")
flags.DEFINE_list("d_values", ["0"], "Outline offsets in pixels at 100x100 (negative: inside).")
flags.DEFINE_list("sigmas", ["2"], "Vertex jitter (pixels at 100x100).")
flags.DEFINE_list("vertices", ["20"], "Vertices kept per outline (0: every traced vertex).")
flags.DEFINE_integer("seeds", 1, "Outlines per (d, sigma, vertices) setting.")
flags.DEFINE_integer("max_images", 0, "At most this many images (0: all).")
flags.DEFINE_list("methods", list(corrections.METHODS), "Methods to run.")
flags.DEFINE_integer("max_clicks", corrections.CAP, "Clicks per outline (the NoC cap).")
flags.DEFINE_float("bf_tolerance", protocol.BF_TOLERANCE,
                   "Boundary F tolerance in pixels at 100x100 (x side/100 at full size).")
flags.mark_flags_as_required(["data_dir", "out"])


def main(argv):
  del argv
  settings = dataset.outline_settings(FLAGS.d_values, FLAGS.sigmas, FLAGS.vertices, FLAGS.seeds)
  counts = corrections.evaluate_corrections(
      FLAGS.config, FLAGS.data_dir, FLAGS.out, settings=settings, methods=FLAGS.methods,
      crop=FLAGS.crop, max_images=FLAGS.max_images, cap=FLAGS.max_clicks,
      tolerance=FLAGS.bf_tolerance,
      command=" ".join(["python -m experiments.corrections"] + sys.argv[1:]))
  print(f"{FLAGS.out}: {counts['ok']} image(s) done, {counts['not']} skipped or failed; "
        "see summary.md")


if __name__ == "__main__":
  cli.run(main)
