"""The README's first command: a short but real fit of the bundled coffee cup, ending
with a cut-out on disk (the README gives its measured time). A half-width net
(in_channels 64) and 300 pairs; the centre crop keeps the cup whole."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.image = "third_party/images/coffee.jpg"
  config.crop = "center"
  config.in_channels = 64
  config.width = 0.5
  config.num_samples = 300
  config.batch_size = 25
  config.num_epochs = 80
  config.checkpoint_every = 5
  return config
