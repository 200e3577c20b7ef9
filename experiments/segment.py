"""Cut-outs from a fitted run: python -m experiments.segment --workdir=runs/cat --box=...

Outlines (each flag may be repeated; every outline gives one row):
  --outline=FILE.json  a polygon [[x, y], ...] or a list of polygons
  --outline=FILE.png   a mask (non-zero = inside), 100x100 or the original image's size
  --box=x0,y0,x1,y1    a rectangle (corners included)
Coordinates are in the 100x100 frame of the net (--frame=net, the default) or in the
original photo's pixels (--frame=original; they must lie inside the cropped square).

Writes to --out (default WORKDIR/segment): per outline k, `row_k.png` (the paper's
Fig. 10 row: outline on the image | network input, nearest-upsampled | network output),
`mask_k.png` and `cutout_k.png` (RGBA) at 100x100, and `mask_k_full.png` and
`cutout_k_full.png` at the cropped original's resolution; `rows.png` stacks all rows.
All outlines are checked before anything is written.

--refine=grabcut (the default, `auto`, for snap runs when OpenCV is installed) makes
the full-resolution outputs the snap + GrabCut hybrid, the best method of the
sloppy-outline benchmark (README): GrabCut with a 5-pixel band started from the
outline united with the net's mask (`singleseg_jax.evaluation.union_grabcut`).
"""
from __future__ import annotations

import os

import jax
import numpy as np
from absl import flags, logging
from PIL import Image

import singleseg_jax as ss
from experiments import cli, cutouts, figures, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A run directory written by experiments.main.")
flags.DEFINE_multi_string("outline", [], "Polygon JSON or mask PNG (repeatable).")
flags.DEFINE_multi_string("box", [], "x0,y0,x1,y1 (repeatable).")
flags.DEFINE_enum("frame", "net", ["net", "original"], "Frame of polygon/box coordinates.")
flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/segment).")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to use.")
flags.DEFINE_integer("seed", 0, "Key for the input noise.")
flags.DEFINE_integer("zoom", 2, "Enlargement of the panels in row_k.png.")
flags.DEFINE_enum("refine", "auto", ["auto", "none", "grabcut"],
                  "Full-resolution refinement: grabcut = snap + GrabCut hybrid (needs "
                  "OpenCV); auto = grabcut for snap runs when OpenCV is installed.")
flags.mark_flags_as_required(["workdir"])

def main(argv):
  del argv
  config, state, image, info = train.load_run(FLAGS.workdir, FLAGS.checkpoint)
  outlines = cutouts.collect_outlines(FLAGS.outline, FLAGS.box, FLAGS.frame, info)
  res = ss.segment(state, image, np.stack([m for _, m in outlines]), jax.random.key(FLAGS.seed))
  try:
    original = ss.load_image(info["image"])
  except ss.InputError as e:
    original = None
    logging.warning("full-resolution outputs skipped: %s", e)
  refine = _refinement(config.variant, original is not None)
  out = FLAGS.out or os.path.join(FLAGS.workdir, "segment")
  os.makedirs(out, exist_ok=True)
  rows = []
  for k, (name, outline) in enumerate(outlines):
    r = cutouts.render(image, outline, res, k, FLAGS.zoom)
    rows.append(r.row)
    Image.fromarray(r.row).save(os.path.join(out, f"row_{k}.png"))
    Image.fromarray(r.mask).save(os.path.join(out, f"mask_{k}.png"))
    Image.fromarray(r.cutout).save(os.path.join(out, f"cutout_{k}.png"))
    if original is not None:
      soft = res.mask[k] if res.probability is None else res.probability[k]
      if refine:
        big, cut = cutouts.full_resolution_hybrid(outline, soft, original, info["crop_box"])
      else:
        big, cut = cutouts.full_resolution(soft, original, info["crop_box"])
      Image.fromarray(big.astype(np.uint8) * 255).save(os.path.join(out, f"mask_{k}_full.png"))
      Image.fromarray(cut).save(os.path.join(out, f"cutout_{k}_full.png"))
    print(f"{k}: {name}: mask covers {res.mask[k].mean():.1%} of the 100x100 image"
          + ("; full resolution refined with GrabCut" if refine else ""))
  figures.image_grid([rows], os.path.join(out, "rows.png"))
  print(f"wrote {len(rows)} row(s) to {out}")


def _refinement(variant: str, have_original: bool) -> bool:
  """Whether to refine with GrabCut; raises InputError when asked for and impossible."""
  if FLAGS.refine == "none":
    return False
  ok, why = cutouts.can_refine(variant)
  if FLAGS.refine == "grabcut" and not (ok and have_original):
    raise ss.InputError(f"--refine=grabcut: {why or 'the run needs its original image'}")
  if not ok and variant == "snap":
    logging.info("full-resolution outputs not refined with GrabCut: %s", why)
  return ok and have_original


if __name__ == "__main__":
  cli.run(main)
