"""Width ablation over many images: python -m experiments.ablation_summary --runs=DIRS --out=DIR

Reads `experiments.ablate_width` output directories, one per image, made with the same
widths and seeds (checked), and answers the paper's question across images rather than
on one: does a wider net fit validation better, and does it segment the user's outline
better? Per width: best val MSE and sloppy-outline IoU (when the runs were made with
--mask), each the mean over images of the image's mean over seeds, with a 95% Student-t
interval over images. Per pair of neighbouring widths: the paired per-image differences
(val MSE as a relative change), their 95% intervals and how many images got better.
Writes DIR/summary.md, DIR/summary.csv (one row per image x width) and DIR/summary.png
(one line per image across widths, val MSE and IoU side by side). The tables are
computed in `experiments/ablation_tables.py`.

--runs takes directories or shell patterns (quote them): --runs='runs/ablation_all/*'.
"""
import csv
import os

from absl import flags

from experiments import cli, figures
from experiments.ablation_tables import FIELDS, expand, has_iou, load, markdown

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", None, "ablate_width output directories (or quoted patterns).")
flags.DEFINE_string("out", None, "Output directory.")
flags.mark_flags_as_required(["runs", "out"])


def main(argv):
  del argv
  rows = load(expand(FLAGS.runs))
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, "summary.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  lines = markdown(rows)
  with open(os.path.join(FLAGS.out, "summary.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  keys = ["best_val_mse"] + (["iou_full"] if has_iou(rows) else [])
  figures.lines_by_group(rows, "params", keys, "image", os.path.join(FLAGS.out, "summary.png"),
                         logx=True, logy=("best_val_mse",))
  print("\n".join(lines))


if __name__ == "__main__":
  cli.run(main)
