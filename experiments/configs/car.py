"""Paper's car run: the wider net, in_channels 512 and every hidden width doubled."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.image = "third_party/images/car.png"
  config.in_channels = 512
  config.width = 2.0
  return config
