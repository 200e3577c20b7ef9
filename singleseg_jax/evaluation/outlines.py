"""Simulated sloppy outlines from a ground-truth mask (numpy; distances by scipy).

An outline is made in four steps, each its own function:

1. `offset_mask(mask, d)`: the object grown (d > 0) or shrunk (d < 0) by d pixels,
   through an exact Euclidean distance transform (`geometry.within_distance`).
   Distances are measured inside the image only: the image border is neither object
   nor background, so shrinking does not eat an object that the crop cuts.
2. `trace_boundary(mask)`: the outer boundary of one 8-connected component, traced
   along the pixel edges (crack following: Moore-neighbour tracing whose vertices are
   pixel corners rather than pixel centres). Filling the full trace with
   `singleseg_jax.polygon_mask` gives the component back exactly, holes filled; the
   library tracers (OpenCV's `findContours`, scikit-image's `find_contours`) put
   vertices on pixel centres or half-levels, whose filled polygon loses part of every
   border pixel, so this one is written here.
3. `resample_closed(vertices, k, phase)`: k vertices evenly spaced by arc length
   along the contour, starting at a random fraction `phase` of the perimeter.
4. Gaussian jitter of sigma pixels on every kept vertex (clipped to the image frame),
   then `rasterise` fills the polygons (even-odd rule at pixel centres, as MATLAB's
   `poly2mask`/`createMask`).

`simulate_outline` chains them. Every component of the offset mask with at least
`min_fraction` of the largest one's area gets its own polygon (a user outlines each
visible part); the vertex budget is shared among them by perimeter. All randomness
comes from an explicit `np.random.Generator`.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

from singleseg_jax.errors import InputError
from singleseg_jax.geometry import as_bool_2d, label_components, within_distance
from singleseg_jax.image import polygon_mask

# Crack directions, clockwise on screen (y points down): east, south, west, north.
_STEPS = ((1, 0), (0, 1), (-1, 0), (0, -1))


def offset_mask(mask, d: float) -> np.ndarray:
  """The mask dilated (d > 0) or eroded (d < 0) by |d| pixels (Euclidean, exact).

  Dilation keeps every pixel within distance d of the object; erosion keeps the object
  pixels farther than |d| from every background pixel (so erosion is the complement of
  the background's dilation). Only pixels inside the image count as background.
  """
  m = as_bool_2d(mask)
  if d > 0:
    return within_distance(m, d)
  if d < 0:
    return m & ~within_distance(~m, -d)
  return m.copy()


def trace_boundary(mask) -> np.ndarray:
  """Outer boundary of the 8-connected component holding the first pixel in raster order.

  Returns (N, 2) float (x, y) polygon vertices on pixel corners, clockwise on screen,
  one per unit edge (collinear vertices kept). Where two pixels of the object touch only
  at a corner the trace turns towards the second one, so the polygon encloses the whole
  8-connected component; holes are not traced (filling the polygon fills them).
  """
  m = as_bool_2d(mask)
  if not m.any():
    raise InputError("cannot trace an empty mask")
  p = np.pad(m, 1)
  core = p[1:-1, 1:-1]
  out: dict[tuple[int, int], list[int]] = {}
  sides = (  # (bg test, start corner offset (dx, dy), direction)
      (~p[:-2, 1:-1], (0, 0), 0),   # top edge: pixel above is background, go east
      (~p[1:-1, 2:], (1, 0), 1),    # right edge, go south
      (~p[2:, 1:-1], (1, 1), 2),    # bottom edge, go west
      (~p[1:-1, :-2], (0, 1), 3),   # left edge, go north
  )
  for bg, (ox, oy), direction in sides:
    rows, cols = np.nonzero(core & bg)
    for r, c in zip(rows.tolist(), cols.tolist()):
      out.setdefault((c + ox, r + oy), []).append(direction)
  r0, c0 = (int(v) for v in np.argwhere(m)[0])
  start = (c0, r0)  # top-left corner of the first pixel: only its top edge leaves here
  vertices = [start]
  heading = 0
  v = (c0 + 1, r0)
  limit = 4 * m.size + 4
  while v != start:
    vertices.append(v)
    dirs = out[v]
    if len(dirs) == 1:
      heading = dirs[0]
    else:  # two pixels meet at a corner: turn left (outwards), joining them
      heading = (heading + 3) % 4 if (heading + 3) % 4 in dirs else dirs[0]
    step = _STEPS[heading]
    v = (v[0] + step[0], v[1] + step[1])
    if len(vertices) > limit:
      raise RuntimeError("boundary tracing did not close")  # a bug, not bad input
  return np.asarray(vertices, np.float64)


def perimeter(vertices) -> float:
  """Length of a closed polygon."""
  v = np.asarray(vertices, np.float64)
  return float(np.linalg.norm(np.roll(v, -1, axis=0) - v, axis=1).sum())


def resample_closed(vertices, k: Optional[int], phase: float = 0.0) -> np.ndarray:
  """`k` points evenly spaced by arc length along a closed polygon.

  The first lies `phase` (a fraction of the perimeter, 0..1) past the first vertex.
  `k` None or 0 returns the vertices unchanged.
  """
  v = np.asarray(vertices, np.float64)
  if not k:
    return v.copy()
  if k < 3:
    raise InputError(f"an outline needs at least 3 vertices, got {k}")
  seg = np.roll(v, -1, axis=0) - v
  lengths = np.linalg.norm(seg, axis=1)
  cum = np.concatenate([[0.0], np.cumsum(lengths)])
  total = cum[-1]
  t = ((phase + np.arange(k) / k) % 1.0) * total
  i = np.clip(np.searchsorted(cum, t, side="right") - 1, 0, len(v) - 1)
  frac = np.where(lengths[i] > 0, (t - cum[i]) / np.where(lengths[i] > 0, lengths[i], 1), 0)
  return v[i] + frac[:, None] * seg[i]


def rasterise(polygons: Sequence[np.ndarray], height: int, width: int,
              scale: float = 1.0) -> np.ndarray:
  """Union of the filled polygons (each scaled by `scale`) on a height x width grid."""
  out = np.zeros((height, width), bool)
  for poly in polygons:
    out |= polygon_mask(np.asarray(poly, np.float64) * scale, height, width)
  return out


class Outline(NamedTuple):
  """A simulated outline: its polygons and their filled mask."""
  polygons: list      # (K_i, 2) float (x, y) vertices in the mask's pixel frame
  mask: np.ndarray    # (H, W) bool: the filled polygons


def component_boundaries(mask, min_fraction: float = 0.05) -> list[np.ndarray]:
  """Traced outer boundaries of the components with >= min_fraction of the largest's area."""
  labels, n = label_components(mask)
  if n == 0:
    raise InputError("the mask is empty: nothing to outline")
  areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
  keep = [i + 1 for i in np.argsort(-areas, kind="stable")
          if areas[i] >= min_fraction * areas.max()]
  return [trace_boundary(labels == lab) for lab in keep]


def simulate_outline(mask, d: float = 0.0, sigma: float = 0.0, vertices: Optional[int] = None,
                     rng: Optional[np.random.Generator] = None,
                     min_fraction: float = 0.05) -> Outline:
  """A sloppy outline of `mask`: offset by d, traced, k vertices kept, jittered, filled.

  `vertices` None or 0 keeps every traced vertex; otherwise that many are shared among
  the outlined components by perimeter (at least 3 each), starting at a random phase.
  Jitter is N(0, sigma^2) per coordinate, clipped to the image. `rng` is required when
  anything is random (sigma > 0 or vertices set). Raises InputError when the offset
  leaves nothing to outline.
  """
  m = as_bool_2d(mask)
  h, w = m.shape
  if sigma < 0:
    raise InputError(f"sigma must be >= 0, got {sigma}")
  if (sigma > 0 or vertices) and rng is None:
    raise InputError("simulate_outline needs an explicit rng for random outlines")
  shifted = offset_mask(m, d)
  if not shifted.any():
    raise InputError(f"offset d={d:g} leaves no object pixel to outline")
  contours = component_boundaries(shifted, min_fraction)
  if vertices:
    lengths = np.array([perimeter(c) for c in contours])
    ks = [max(3, int(round(vertices * L / lengths.sum()))) for L in lengths]
    contours = [resample_closed(c, k, rng.uniform()) for c, k in zip(contours, ks)]
  polygons = []
  for c in contours:
    if sigma > 0:
      c = c + rng.normal(0.0, sigma, c.shape)
    polygons.append(np.clip(c, 0, [w, h]))
  return Outline(polygons, rasterise(polygons, h, w))
