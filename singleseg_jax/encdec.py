"""The encdec variant's net: an encoder of the full-resolution image and the outline in
front of the paper's Upsampler, on the paper's pairs.

The image is the same in every pair, so a feature of the image alone is a constant the
decoder could as well learn as a bias, and so is the image's share of any linear map of
(image, outline). The encoder therefore lets the two meet through a nonlinearity at full
resolution: ReLU of a 3x3 conv of the image's RGB plus a per-channel multiple of the
paper input's grey, taken as constant over each thumbnail block (nearest upsampling,
done by broadcasting). A patchify layer (a dense map of each block, i.e. a conv with
kernel = stride = block, written as a GEMM, exact for any side) pools that into a code
on the thumbnail grid, 3x3 convs mix the code, and the last one, which starts at zero,
is added to the paper input. So the user's outline still reaches the net only through
the paper input, a fresh net is the paper's net with the same decoder, and the encoder
can bring the image's full-resolution evidence (edges inside a block) into the
decoder's input.

The image's conv runs once per batch, as the image is shared; per sample, the encoder
costs a broadcast add, a ReLU and a GEMM at full resolution. (A 3x3 conv of the
upsampled grey per sample instead made a fit about three times slower on XLA:CPU.)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from singleseg_jax.errors import InputError
from singleseg_jax import image as image_lib
from singleseg_jax.paper.model import PAPER_SCALE, PAPER_SIZE, Upsampler


def check_encoder(hidden, layers) -> None:
  """InputError unless `hidden` >= 1 channels and `layers` >= 1 code convs."""
  for name, v in (("encdec_hidden", hidden), ("encdec_layers", layers)):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise InputError(f"{name} must be a positive integer, got {v!r}")


def check_blocks(size: int, scale: float) -> int:
  """The side of the image block each thumbnail pixel's code pools (size / thumbnail);
  InputError when the thumbnail does not tile the image."""
  small = image_lib.thumbnail_size(size, scale)
  if size % small:
    raise InputError(f"encdec needs a thumbnail side that divides the size, got {small} "
                     f"for size {size}")
  return size // small


class EncDecNet(nnx.Module):
  """(paper input (N, s, s, in_channels), image (S, S, 3) or (N, S, S, 3) in 0..255
  levels) -> (N, S, S, 3) in [0, 1]; S = s * block.

  `decoder` is the paper's Upsampler, built first from `rngs`, so with the same key it
  holds the paper variant's initial parameters. `hidden` is the encoder's width,
  `layers` the number of 3x3 convs on the code (the last maps to in_channels).
  """
  #: `train.apply_model` passes the fitted image to nets that take it.
  takes_image = True

  def __init__(self, in_channels: int = 256, width: float = 1.0, hidden: int = 16,
               layers: int = 2, *, size: int = PAPER_SIZE, scale: float = PAPER_SCALE,
               dtype=jnp.float32, fast_grad: bool = True, winograd: bool = False,
               rngs: nnx.Rngs):
    check_encoder(hidden, layers)
    self.block = check_blocks(size, scale)
    self.decoder = Upsampler(in_channels, width, size=size, scale=scale, dtype=dtype,
                             fast_grad=fast_grad, winograd=winograd, rngs=rngs)
    self.in_channels = in_channels
    self.input_side, self.output_side = self.decoder.input_side, self.decoder.output_side
    init = nnx.initializers.glorot_uniform()  # the seed's initialiser, as in the decoder
    conv = lambda cin, cout, **kw: nnx.Conv(cin, cout, (3, 3), padding="SAME", dtype=dtype,
                                            rngs=rngs, **{"kernel_init": init, **kw})
    self.pixels = conv(3, hidden)
    self.outline = nnx.Linear(1, hidden, use_bias=False, dtype=dtype, kernel_init=init,
                              rngs=rngs)
    self.patchify = nnx.Linear(self.block * self.block * hidden, hidden, dtype=dtype,
                               kernel_init=init, rngs=rngs)
    self.code = nnx.List([conv(hidden, hidden) for _ in range(layers - 1)])
    zeros = nnx.initializers.zeros_init()
    self.residual = conv(hidden, in_channels, kernel_init=zeros, bias_init=zeros)

  def encode(self, x, image):
    """The decoder's input: the paper input plus the encoder's code."""
    b = self.block
    n, s = x.shape[0], x.shape[1]
    image = image[None] if image.ndim == 3 else image
    if image.shape[-3:] != (s * b, s * b, 3) or image.shape[0] not in (1, n):
      raise InputError(f"image must be ({s * b}, {s * b}, 3) for a {s}x{s} input, "
                       f"got {image.shape}")
    pixels = self.pixels(image / 255.0).reshape(-1, s, b, s, b, self.pixels.out_features)
    grey = self.outline(x[..., :1])[:, :, None, :, None]  # (n, s, 1, s, 1, hidden)
    h = jax.nn.relu(pixels + grey).transpose(0, 1, 3, 2, 4, 5).reshape(n, s, s, -1)
    h = jax.nn.relu(self.patchify(h))
    for layer in self.code:
      h = jax.nn.relu(layer(h))
    return x + self.residual(h)

  def __call__(self, x, image):
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise InputError(f"network input must be (N, H, W, {self.in_channels}), got {x.shape}")
    return self.decoder(self.encode(x, image))
