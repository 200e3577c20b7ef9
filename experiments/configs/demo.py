"""The README's first command: a short but real fit of the bundled cat (a few minutes
on two CPU cores), ending with a cut-out on disk. A quarter-width net and 300 pairs."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.in_channels = 64
  config.width = 0.5
  config.num_samples = 300
  config.batch_size = 25
  config.num_epochs = 40
  config.checkpoint_every = 5
  return config
