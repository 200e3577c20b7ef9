"""The seed's cat run: in_channels 256, width 1, 1000 pairs (750 train), batch 50,
Adam 1e-3 with L2 1e-4, up to 500 epochs, stopping when the val loss plateaus.

`--config=experiments/configs/default.py:runlocal` is a tiny run for smoke tests and
CI (seconds on two CPU cores, not a real fit), as big_vision's `runlocal`.
"""
import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The cat run's config; `arg` "runlocal" shrinks it to a smoke run."""
  if arg not in ("", "runlocal"):
    raise ValueError(f"unknown config argument {arg!r}: use default.py or default.py:runlocal")
  config = ml_collections.ConfigDict()
  # The photo. A path; relative paths are resolved against the current directory.
  # Bundled stand-ins live in third_party/images/ (licences beside them); the paper's
  # own photos carry no licence, so pass their path with --config.image.
  config.image = "third_party/images/cat.jpg"
  config.crop = "top_left"      # the paper's crop; "center" keeps centred objects whole
  config.size = 100             # the net's output side: the net is derived from size, scale
                                # (paper/model.py layer_table; 100 and 0.1 give the seed's)
  config.scale = 0.1            # the net's input, the thumbnail: ceil(size * scale) = 10

  # "paper": the seed's net (all fields below as in the paper). "snap": the superpixel
  # graph net of singleseg_jax/snap/ (beyond the paper; configs/snap.py), which uses
  # the snap_* fields, batch_size, learning_rate, num_samples (for its val pairs) too.
  # "encdec": the paper's pairs and net with an encoder of the full-resolution image
  # and the outline in front (singleseg_jax/encdec.py; configs/encdec.py).
  config.variant = "paper"
  config.snap_segments = 100    # superpixels of the 100x100 image (snap needs size 100)
  config.snap_hidden = 64       # graph net width
  config.snap_rounds = 3        # message-passing rounds
  config.snap_steps = 25        # updates (fresh batches) per epoch
  config.snap_parts = 1         # colour-coherent parts per training region: at most this
                                # (it shapes the val pairs too: val losses compare only
                                # between runs with the same snap_parts)
  # Give the snap net an estimate of the outline's offset from the image's edges
  # (snap/net.py edge_offset_features); configs/snap.py turns it on. False here, as
  # FitOptions' default: what a saved run that lacks the key was fitted without.
  config.snap_edge_offset = False
  config.encdec_hidden = 16     # the encoder's channels
  config.encdec_layers = 2      # 3x3 convs on its 10x10 code, the last one to in_channels

  config.in_channels = 256
  config.width = 1.0            # hidden widths 256-128-64-32-8 times this; last stays 3
  config.dtype = "float32"      # compute dtype: float32 or bfloat16
  # How the six layers are differentiated; only the speed and the last bits of the
  # gradients depend on it. "custom": a VJP of tap gathers and GEMMs, written because
  # XLA:CPU runs autodiff of strided transposed convolutions through a slow generic
  # path; "winograd": custom with Winograd forward and gradients where they are measured
  # to win (paper/winograd.py); "stock": plain autodiff (the backend's own convolution
  # gradients); "auto": winograd on CPU, where it is measured to pay, stock elsewhere.
  config.layer = "auto"

  config.num_samples = 1000
  config.train_fraction = 0.75
  config.fresh_data = False     # True: new masks and noise for training every epoch
  config.batch_size = 50
  # Samples per gradient chunk of the paper and encdec nets (snap's small graph net
  # ignores it): a step's gradient is the mean
  # over chunks of this many samples, one after the other, the same update up to float
  # rounding. 0 is auto: chunks of 10 on CPU when the batch's backward working set
  # overflows the cache (a chunk's then stays in it; train.resolve_microbatch); the
  # whole batch otherwise and on accelerators.
  config.microbatch = 0
  config.num_epochs = 500
  config.learning_rate = 1e-3
  config.l2 = 1e-4
  config.patience = 25          # plateau rule: stop after this many epochs without
  config.rel_tol = 1e-3         # the val loss falling by more than rel_tol (relative)

  config.seed = 0
  # Epochs run on the device between two host syncs: larger blocks log and save less
  # often and leave an accelerator less idle; the results are the same for any value.
  config.epochs_per_sync = 10
  config.checkpoint_every = 10  # epochs between "latest" checkpoints (best: on improvement)
  config.num_grid = 8           # validation pairs shown in val_grid.png

  if arg == "runlocal":
    config.epochs_per_sync = 1  # a sync and a checkpoint per epoch: what the tests kill
    config.in_channels = 8
    config.width = 0.125
    config.num_samples = 40
    config.batch_size = 10
    config.num_epochs = 3
    config.patience = 50
    config.checkpoint_every = 1
    config.num_grid = 4
  return config
