"""Ablation table over evaluation runs: python -m experiments.compare --runs=A,B --out=DIR

Each run is an `experiments.evaluate` output directory made with the same data,
outline flags and seeds (checked), one per net variant or config. The table lists
every run's net (labelled by --labels, or the run's variant and directory) and every
baseline once: mean IoU and boundary F at full resolution with 95% intervals over
images, the paired difference in IoU to --reference, the mean fit time and best val
MSE per image and the median time per segmentation (the `images` column counts the
images behind each row). Writes DIR/ablation.md and DIR/ablation.csv.
"""
import os

from absl import flags

from experiments import cli
from singleseg_jax import tables, variants
from singleseg_jax.evaluation import reports

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "experiments.evaluate output directories.")
flags.DEFINE_list("labels", [], "A label per run for its net (default: variant (dir)).")
flags.DEFINE_string("reference", "grabcut_trimap_full", "Baseline for the paired column.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_bool("common_images", False, "Compare on the images every run has (for a run "
                  "stopped early or made with --max_images); the table says how many.")
flags.mark_flags_as_required(["runs", "out"])


def main(argv):
  del argv
  rows = reports.comparison(FLAGS.runs, FLAGS.labels, FLAGS.reference, variants.DEFAULT,
                            FLAGS.common_images)
  text = reports.comparison_markdown(rows, FLAGS.reference)
  os.makedirs(FLAGS.out, exist_ok=True)
  tables.write_csv(os.path.join(FLAGS.out, "ablation.csv"), rows)
  tables.atomic_write(os.path.join(FLAGS.out, "ablation.md"),
                      "# Ablation: " + ", ".join(FLAGS.runs) + "\n\nEvery ± is a 95% Student-t "
                      "interval over per-image means; the paired column is per image, the same "
                      "outlines.\n\n" + text)
  print(text)


if __name__ == "__main__":
  cli.run(main)
