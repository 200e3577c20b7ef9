"""Cut-outs from a fitted run: python -m experiments.segment --workdir=runs/cat --box=...

Outlines (each flag may be repeated; every outline gives one row):
  --outline=FILE.json  a polygon [[x, y], ...] or a list of polygons
  --outline=FILE.png   a mask (non-zero = inside), the run's size or the original image's
  --box=x0,y0,x1,y1    a rectangle (corners included)
Coordinates are in the net's frame, the run's size x size image (100x100 for the
seed's size; --frame=net, the default) or in the
original photo's pixels (--frame=original; they must lie inside the cropped square).

Writes to --out (default WORKDIR/segment): per outline k, `row_k.png` (the paper's
Fig. 10 row: outline on the image | network input, nearest-upsampled | network output),
`mask_k.png` and `cutout_k.png` (RGBA) at the run's size, and `mask_k_full.png` and
`cutout_k_full.png` at the cropped original's resolution; `rows.png` stacks all rows.
All outlines are checked before anything is written.

--refine=grabcut (`auto`, the default, where the variant allows it and OpenCV is
installed) makes the full-resolution outputs the net + GrabCut hybrid
(`singleseg_jax.cutouts.full_resolution_hybrid`). --soft_edges gives the
full-resolution cut-outs fractional alpha at the edge (the masks stay hard).
"""
import os

import jax
import numpy as np
from absl import flags, logging

from experiments import cli
from singleseg_jax import cutouts, run, variants
from singleseg_jax.errors import InputError
from singleseg_jax.image import load_image
from singleseg_jax.segment import segment

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A run directory written by experiments.main.")
flags.DEFINE_multi_string("outline", [], "Polygon JSON or mask PNG (repeatable).")
flags.DEFINE_multi_string("box", [], "x0,y0,x1,y1 (repeatable).")
flags.DEFINE_enum("frame", "net", ["net", "original"], "Frame of polygon/box coordinates.")
flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/segment).")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to use.")
flags.DEFINE_integer("seed", 0, "Key for the input noise.")
flags.DEFINE_integer("zoom", 2, "Enlargement of the panels in row_k.png.")
flags.DEFINE_enum("refine", "auto", list(cutouts.REFINE_MODES),
                  "Full-resolution refinement: grabcut = net + GrabCut hybrid (needs "
                  "OpenCV); auto = grabcut where the variant allows it and OpenCV is installed.")
flags.DEFINE_bool("soft_edges", False, "Fractional alpha at the edge of the full-resolution "
                  "cut-outs (colour guided filter of the mask, singleseg_jax/matting.py).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  config, state, image, info = run.load_run(FLAGS.workdir, FLAGS.checkpoint)
  outlines = cutouts.collect_outlines(FLAGS.outline, FLAGS.box, FLAGS.frame, info,
                                      image.shape[0])
  res = segment(state, image, np.stack([m for _, m in outlines]), jax.random.key(FLAGS.seed))
  try:
    original = load_image(info["image"])
  except InputError as e:
    original = None
    logging.warning("full-resolution outputs skipped: %s", e)
  variant = variants.get(config.get("variant", variants.DEFAULT))
  refine = cutouts.refinement(FLAGS.refine, variant, original is not None)
  out = FLAGS.out or os.path.join(FLAGS.workdir, "segment")
  lines = cutouts.write(out, image, outlines, res, original, info["crop_box"], refine,
                        FLAGS.zoom, FLAGS.soft_edges)
  print("\n".join(lines) + f"\nwrote {len(lines)} row(s) to {out}")


if __name__ == "__main__":
  cli.run(main)
