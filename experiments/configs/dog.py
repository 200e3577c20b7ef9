"""Paper's dog run: same net as the cat (in_channels 256, width 1)."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.image = "third_party/images/dog.png"
  return config
