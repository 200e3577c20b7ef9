"""The seed's cat run at 400x400 from a 40x40 thumbnail (scale 0.1, as the seed).

The net is derived from the size (`singleseg_jax.paper.model.layer_table`): four
stride-1 layers at 40..48 (each +2 there is +16 at the output), then the seed's
pattern, sides 48 -> 97 -> 99 -> 198 -> 200 -> 400; about 38x the seed's FLOPs per
sample. Memory: the seed's 1000 pairs hold about 3.7 GB at this size (targets and
256-channel inputs, float32), and a batch-50 step on CPU takes a few GB more (6.2 GB
peak RSS measured with 300 pairs). `cat400.py:runlocal` is the tiny smoke run of
default.py at this size.
"""
from experiments.configs import default


def get_config(arg: str = ""):
  config = default.get_config(arg)
  config.size = 400
  config.scale = 0.1
  return config
