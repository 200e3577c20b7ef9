"""The seed's cat run at 200x200 from a 20x20 thumbnail (scale 0.1, as the seed).

The net is derived from the size (`singleseg_jax.paper.model.layer_table`): sides
20 -> 22 -> 24 -> 47 -> 49 -> 98 -> 100 -> 200, widths 256-256-128-64-32-8-3, about 5.8x
the seed's FLOPs per sample. Everything else is the seed's schedule (default.py).
`cat200.py:runlocal` is the tiny smoke run of default.py at this size.
"""
from experiments.configs import default


def get_config(arg: str = ""):
  config = default.get_config(arg)
  config.size = 200
  config.scale = 0.1
  return config
