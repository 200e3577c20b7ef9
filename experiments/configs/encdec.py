"""Beyond the paper: the encdec variant on the cat.

The seed's cat run (default.py: the same pairs, loss, schedule and Upsampler) with an
encoder in front of the net (singleseg_jax/encdec.py): the full-resolution image and
the outline's grey meet in a 3x3 conv, are pooled per thumbnail block into a 10x10
code, and the code is added to the paper's input. The encoder adds about 66k
parameters to the cat net's 980k.
"""
from experiments.configs import default


def get_config(arg: str = ""):
  config = default.get_config(arg)
  config.variant = "encdec"
  return config
