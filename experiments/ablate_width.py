"""Width ablation: python -m experiments.ablate_width --config=... --out=DIR

Fits the config's image at each width multiplier (in_channels scaled with it), several
seeds per width, and writes DIR/ablation.{csv,md,json,png} (`singleseg_jax.ablation`).
With --mask (the ground truth of the config's image, 255 object / 0 background / 128
ignored, the image's own size) every net is also scored on simulated sloppy outlines
by the evaluation's protocol: that tests the paper's claim that width helps
validation but not the user's outlines. SINGLESEG_COORDINATOR, SINGLESEG_NUM_PROCESSES
and SINGLESEG_PROCESS_ID make it one process of several (`cli.initialize_distributed`).
"""
from absl import flags
from ml_collections import config_flags

from experiments import cli
from singleseg_jax import ablation

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Base configuration (e.g. cat.py).")
flags.DEFINE_list("widths", ["0.125", "0.25", "0.5", "1", "2"], "Width multipliers.")
flags.DEFINE_integer("seeds", 3, "Seeds per width.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_bool("compare_loop", False, "Also time the first width's seeds in a loop.")
flags.DEFINE_enum("together", "auto", list(ablation.TOGETHER),
                  "How the seeds of one width train: 'vmap' (one population, sharded over "
                  "all devices of all processes and vmapped within each), 'loop' (one fit "
                  "after another, one process only; the same results), 'auto': loop on "
                  "CPU, where XLA runs the vmapped (grouped) convolutions slower than a "
                  "loop, vmap elsewhere or with several processes.")
flags.DEFINE_string("mask", None, "Ground-truth mask of the config's image: adds the "
                    "sloppy-outline IoU of every net.")
flags.DEFINE_list("eval_d_values", ["-4", "-2", "0", "2", "4", "6", "8"],
                  "With --mask: outline offsets in pixels at 100x100.")
flags.DEFINE_list("eval_sigmas", ["0", "2"], "With --mask: vertex jitter in pixels.")
flags.DEFINE_integer("eval_vertices", 16, "With --mask: vertices per outline.")
flags.mark_flags_as_required(["config", "out"])


def main(argv):
  del argv
  cli.initialize_distributed()
  settings = ablation.outline_settings(FLAGS.eval_d_values, FLAGS.eval_sigmas,
                                       FLAGS.eval_vertices) if FLAGS.mask else None
  lines = ablation.ablate(FLAGS.config, FLAGS.out, widths=FLAGS.widths, seeds=FLAGS.seeds,
                          together=FLAGS.together, mask=FLAGS.mask, settings=settings,
                          compare_loop=FLAGS.compare_loop)
  print("\n".join(lines))


if __name__ == "__main__":
  cli.run(main)
