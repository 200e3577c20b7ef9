"""A tiny run for smoke tests and CI: seconds on two CPU cores, not a real fit."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.in_channels = 8
  config.width = 0.125
  config.num_samples = 40
  config.batch_size = 10
  config.num_epochs = 3
  config.patience = 50
  config.checkpoint_every = 1
  config.num_grid = 4
  return config
