"""The fit schedule for `experiments.evaluate`: one net per evaluation image on a CPU.

The seed's schedule (default.py: in_channels 256, width 1, 1000 pairs, up to 500
epochs) takes tens of minutes per image on two CPU cores, too long for an evaluation
of tens of images. This config uses the schedule of demo.py, the README's "short but
real fit": a half-width net (in_channels 64, hidden widths 128-64-32-16-4), 300 pairs
(225 train, 75 val), batch 25, at most 80 epochs with the seed's plateau rule
(patience 25, rel_tol 1e-3), Adam 1e-3 and L2 1e-4 as in the seed. It is not tuned to
any evaluation image; results therefore measure this shorter schedule, not the seed's
full one (run with --config=experiments/configs/default.py for that, on an
accelerator).

`image` is unused (evaluate reads --data_dir); `crop` is overridden by --crop
(default "center").
"""
from experiments.configs import demo


def get_config():
  config = demo.get_config()
  config.image = ""
  return config
