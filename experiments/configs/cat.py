"""Paper's cat run (Fig. 4-5): in_channels 256, width 1."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.image = "third_party/images/cat.jpg"
  return config
