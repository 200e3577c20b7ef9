"""`experiments.evaluate --config=experiments/configs/evaluate_snap.py`: the snap
variant's schedule (configs/snap.py) for the sloppy-outline evaluation."""
from experiments.configs import snap


def get_config():
  config = snap.get_config()
  config.image = ""
  return config
