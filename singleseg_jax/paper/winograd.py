"""Winograd minimal filtering for the stride-1 layers: the same 3x3 correlations with
fewer multiplications (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
Networks").

F(m x m, 3x3) computes an m x m output tile from an (m+2) x (m+2) input tile as
Y = A^T [(G w G^T) * (B^T d B)] A: with the transforms done once per tile and kernel,
the multiplications left are one batched GEMM over the (m+2)^2 transform positions,
(tiles, Cin) @ (Cin, Cout) each: 16 per 4 outputs for F(2x2,3x3), 36 per 16 for
F(4x4,3x3), against 9 per output for a direct convolution.

Every transform (of the input tiles, the output tiles, the kernel G w G^T and the
kernel gradient back to 3x3) is a sum with constant coefficients, written as explicit
adds of slices (zero coefficients skipped), so that XLA fuses it into two passes over
memory (rows, then columns). As products with the small constant matrices (einsum)
XLA:CPU hands them to its GEMM library as GEMMs with 3-6 terms per sum, several times
slower: for the kernel of layer 1 (256 -> 256) that alone cost a third of the layer.

`layers.py` builds the layer's forward pass and both gradients from `correlate` and
`correlate_kernel_grad`; FORMS says which layer gets which form.
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp
from jax import lax

#: (B^T, G, A^T) of F(m x m, 3x3) by output tile side m: Lavin & Gray's matrices, with
#: interpolation points 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4), and the point at infinity.
TRANSFORMS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}
TILES = tuple(TRANSFORMS)

#: Which form each stride-1 layer of the seed's net runs as under `layer="winograd"`,
#: by input side: "f2" or "f4" (Winograd F(2x2,3x3) or F(4x4,3x3)); sides not listed
#: keep layers.py's tap-GEMM VJP. Chosen by paired timings (`speed.time_layer_forms`
#: per layer, then the whole train step; the numbers are in docs/speed.md), batch 50 in
#: chunks of 10, float32. Layer 1 (side 10; 256 -> 256 in the cat net, 512 -> 512 in
#: the car net) gains with both forms alone (1.14-1.31x); in the step F(4x4) and F(2x2)
#: tie on the cat net and F(4x4) wins on the car net (1.01x over F(2x2)). Layer 3 (side 23)
#: by F(4x4) gains where it is wide: the car net's (256 -> 128) 1.19x alone and 1.10x
#: in the step; the cat net's (128 -> 64) loses alone (0.78x; by F(2x2) it gains alone,
#: 1.10x, but loses in the step, 0.93x), and MIN_CHANNEL_PRODUCT keeps it out. Layer 5
#: (side 49, 32 -> 8 or 64 -> 16) loses in both forms: its GEMMs are too thin for the
#: saved multiplications to pay for the transforms' passes over memory.
FORMS = {10: "f4", 23: "f4"}
#: The least Cin * Cout for which a listed layer runs in its Winograd form. Layer 1
#: alone gains 1.18x at 256 x 256, ties at 128 x 128 (1.01x) and loses at 64 x 64
#: (0.78x); layer 3 gains at 256 x 128 and loses at 128 x 64 (docs/speed.md). So narrow
#: layers (the cat net's layer 3, the width ablation's, the tests' tiny nets) keep the
#: tap-GEMM VJP; the threshold sits between the losses and the gains.
MIN_CHANNEL_PRODUCT = 128 * 256


def form_for(stride: int, side: int, dtype, in_channels: int, out_channels: int) -> str:
  """The form a layer runs as under `layer="winograd"`: FORMS for stride-1 float32 layers
  of at least MIN_CHANNEL_PRODUCT, "custom" for the rest (bfloat16 would lose F(4x4)'s
  accuracy; strided layers keep the tap-GEMM VJP)."""
  if (stride != 1 or jnp.dtype(dtype) != jnp.float32
      or in_channels * out_channels < MIN_CHANNEL_PRODUCT):
    return "custom"
  return FORMS.get(side, "custom")


def tile_of(form: str) -> int:
  """Output tile side m of a Winograd form name ("f2" -> 2, "f4" -> 4)."""
  return int(form[1:])


def _combine(coeffs, parts):
  """sum_r coeffs[r] * parts[r], zero terms skipped and unit ones not multiplied."""
  out = None
  for c, p in zip(coeffs, parts):
    if c == 0:
      continue
    term = p if c == 1 else -p if c == -1 else p * np.asarray(c, p.dtype)
    out = term if out is None else out + term
  return out


def _transform_2d(mat, slices_h, slices_w):
  """[sum_{r,s} mat[x, r] mat[y, s] d_{r,s}] over (x, y), stacked on a leading axis pair.

  `slices_h(r)` gives the map's r-th row taps (as an array), `slices_w(rows, s)` the
  s-th column taps of those; the rows are combined first, then the columns."""
  rows = [_combine(mat[x], [slices_h(r) for r in range(mat.shape[1])])
          for x in range(mat.shape[0])]
  return jnp.stack([jnp.stack([_combine(mat[y], [slices_w(row, s) for s in range(mat.shape[1])])
                               for y in range(mat.shape[0])]) for row in rows])


def _input_tiles(d, m: int, t_h: int, t_w: int):
  """B^T d B of every (m+2)-tile of d at stride m: (a*a, N*t_h*t_w, C), a = m + 2.

  d must be at least (m*t + 2) on each side."""
  bt = TRANSFORMS[m][0]
  n, c = d.shape[0], d.shape[-1]
  v = _transform_2d(bt, lambda r: d[:, r:r + m * (t_h - 1) + 1:m],
                    lambda rows, s: rows[:, :, s:s + m * (t_w - 1) + 1:m])
  return v.reshape((m + 2) ** 2, n * t_h * t_w, c)


def _tiling(d, m: int):
  """(d padded to whole tiles, tiles down, tiles across) for a VALID 3x3 correlation."""
  _, h, w, _ = d.shape
  t_h, t_w = -(-(h - 2) // m), -(-(w - 2) // m)
  return jnp.pad(d, ((0, 0), (0, m * t_h + 2 - h), (0, m * t_w + 2 - w), (0, 0))), t_h, t_w


def correlate(d, w, m: int):
  """(out, tiles): the VALID correlation out[p, q] = sum_{a,b} d[p+a, q+b] @ w[a, b] by
  F(m x m, 3x3), and d's transformed tiles (what `correlate_kernel_grad` takes).

  d (N, H, W, Cin), w (3, 3, Cin, Cout); out is (N, H-2, W-2, Cout) in d's dtype."""
  _, g, at = TRANSFORMS[m]
  n, h, wd, _ = d.shape
  padded, t_h, t_w = _tiling(d, m)
  v = _input_tiles(padded, m, t_h, t_w)                            # (a*a, P, Cin)
  u = _transform_2d(g, lambda r: w[r], lambda rows, s: rows[s]).reshape((m + 2) ** 2, *w.shape[2:])
  prod = lax.dot_general(v, u.astype(v.dtype), (((2,), (1,)), ((0,), (0,))),
                         preferred_element_type=jnp.float32)      # (a*a, P, Cout)
  a = m + 2
  prod = prod.reshape(a, a, n, t_h, t_w, -1)
  y = _transform_2d(at, lambda r: prod[r], lambda rows, s: rows[s])  # (m, m, N, th, tw, C)
  y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, m * t_h, m * t_w, -1)
  return y[:, :h - 2, :wd - 2].astype(d.dtype), v


def correlate_kernel_grad(tiles, g_out, m: int):
  """dw[a, b] = sum_{p,q} d[p+a, q+b]^T g_out[p, q]: the kernel gradient of `correlate`,
  from the tiles it returned for d, g_out (N, H-2, W-2, Cout).

  Per transform position, one GEMM over the tiles of (B^T d B)^T and (A g_out A^T),
  then G^T (.) G back to 3x3."""
  _, g, at = TRANSFORMS[m]
  n, ho, wo, cout = g_out.shape
  t_h, t_w = -(-ho // m), -(-wo // m)
  g_out = jnp.pad(g_out, ((0, 0), (0, m * t_h - ho), (0, m * t_w - wo), (0, 0)))
  gt = g_out.reshape(n, t_h, m, t_w, m, cout)
  # A g A^T per tile: the transpose of the output transform (at is A^T, m x a).
  dm = _transform_2d(at.T, lambda i: gt[:, :, i], lambda rows, j: rows[:, :, :, j])
  dm = dm.reshape((m + 2) ** 2, n * t_h * t_w, cout)
  du = lax.dot_general(tiles, dm, (((1,), (1,)), ((0,), (0,))),
                       preferred_element_type=jnp.float32)        # (a*a, Cin, Cout)
  du = du.reshape(m + 2, m + 2, *du.shape[1:])
  return _transform_2d(g.T, lambda r: du[r], lambda rows, s: rows[s])
