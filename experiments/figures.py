"""PNG figures: loss curves and image grids (no maths here, only drawing)."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402


def loss_curve(history: Sequence[dict], path: str) -> None:
  """Train and val loss (MATLAB's half-SSE per sample) per epoch, log scale."""
  fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
  epochs = [r["epoch"] for r in history]
  ax.plot(epochs, [r["train_loss"] for r in history], label="train")
  ax.plot(epochs, [r["val_loss"] for r in history], label="validation")
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("loss (half SSE per sample)")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def to_uint8(img) -> np.ndarray:
  """[0, 1] floats or uint8 -> uint8 RGB."""
  a = np.asarray(img)
  if a.dtype != np.uint8:
    a = np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, -1)
  return a


def image_grid(columns: Sequence[Sequence[np.ndarray]], path: str, titles: Sequence[str] = (),
               pad: int = 2) -> None:
  """Rows of images: columns[c][r] is row r, column c (all the same size)."""
  rows = len(columns[0])
  h, w = to_uint8(columns[0][0]).shape[:2]
  head = 14 if titles else 0
  canvas = Image.new("RGB", (len(columns) * (w + pad) + pad, head + rows * (h + pad) + pad),
                     (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for c, title in enumerate(titles):
    draw.text((pad + c * (w + pad), 1), title, fill=(0, 0, 0))
  for c, col in enumerate(columns):
    for r, img in enumerate(col):
      canvas.paste(Image.fromarray(to_uint8(img)), (pad + c * (w + pad), head + pad + r * (h + pad)))
  canvas.save(path, optimize=True)


def scatter_by_group(rows: Sequence[dict], x: str, y, group: str, path: str,
                     logx: bool = False) -> None:
  """One marker per row, coloured by `group`, with the group means joined by a line;
  `y` is one column or a list of columns (one panel each)."""
  ys = [y] if isinstance(y, str) else list(y)
  fig, axes = plt.subplots(1, len(ys), figsize=(5 * len(ys), 3.2), dpi=100, squeeze=False)
  groups = sorted({r[group] for r in rows})
  for ax, col in zip(axes[0], ys):
    means = []
    for g in groups:
      rs = [r for r in rows if r[group] == g]
      ax.scatter([r[x] for r in rs], [r[col] for r in rs], s=14, label=f"{group} {g:g}")
      means.append((np.mean([r[x] for r in rs]), np.mean([r[col] for r in rs])))
    ax.plot(*zip(*means), color="0.5", lw=1)
    if logx:
      ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(col)
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def lines_by_group(rows: Sequence[dict], x: str, ys: Sequence[str], group: str, path: str,
                   logx: bool = False, logy: Sequence[str] = ()) -> None:
  """One thin line per `group` value across `x`, the mean over groups as a thick black
  line; one panel per column of `ys` (log scale for those in `logy`)."""
  fig, axes = plt.subplots(1, len(ys), figsize=(5 * len(ys), 3.4), dpi=100, squeeze=False)
  for ax, col in zip(axes[0], ys):
    for g in sorted({r[group] for r in rows}):
      rs = sorted((r for r in rows if r[group] == g), key=lambda r: r[x])
      ax.plot([r[x] for r in rs], [r[col] for r in rs], marker="o", ms=3, lw=1, label=str(g))
    xs = sorted({r[x] for r in rows})
    ax.plot(xs, [np.mean([r[col] for r in rows if r[x] == v]) for v in xs], color="k", lw=2.5,
            label="mean")
    if logx:
      ax.set_xscale("log")
    if col in logy:
      ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(col)
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
