"""Width ablation over many images: python -m experiments.ablation_summary --runs=DIRS --out=DIR

Reads `experiments.ablate_width` output directories, one per image, made with the same
widths and seeds (checked), and answers the paper's question across images: per width
the means over images with 95% intervals, per pair of neighbouring widths the paired
per-image differences. Writes DIR/summary.{md,csv,png} (`singleseg_jax.ablation`).

--runs takes directories or shell patterns (quote them): --runs='runs/ablation_all/*'.
"""
from absl import flags

from experiments import cli
from singleseg_jax import ablation

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "ablate_width output directories (or quoted patterns).")
flags.DEFINE_string("out", None, "Output directory.")
flags.mark_flags_as_required(["runs", "out"])


def main(argv):
  del argv
  print("\n".join(ablation.summarise(FLAGS.runs, FLAGS.out)))


if __name__ == "__main__":
  cli.run(main)
