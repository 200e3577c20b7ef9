"""Every PNG the project writes: loss curves, image grids, the evaluation's and the
ablations' plots, the speed sweep (drawing only; the numbers come computed).

Every file is written whole or not at all (a temporary file, then a rename).
"""
from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from singleseg_jax.tables import atomic_write  # noqa: E402


def _save_figure(fig, path: str, dpi: int = 100) -> None:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  plt.close(fig)
  atomic_write(path, buf.getvalue())


def save_png(array: np.ndarray, path: str, optimize: bool = False) -> None:
  """Writes a uint8 array (grey, RGB or RGBA) as a PNG, atomically."""
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG", optimize=optimize)
  atomic_write(path, buf.getvalue())


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
  _save_figure(fig, path)


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
  save_png(np.asarray(canvas), path, optimize=True)


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
  _save_figure(fig, path)


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
  _save_figure(fig, path)


def iou_vs_error(series: dict, path: str) -> None:
  """The evaluation's two panels: IoU against the outline offset d (mean and interval
  per method, the outline's own IoU dotted), and IoU against the outline's own IoU.

  `series` is `evaluation.reports.iou_vs_error_series`'s dict.
  """
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
  colours = plt.get_cmap("tab10")
  ds = series["d"]
  for i, (m, s) in enumerate(series["methods"].items()):
    axes[0].errorbar(ds, s["mean"], yerr=s["half"], marker="o", ms=3, capsize=2,
                     color=colours(i), label=m)
    axes[1].plot(s["bin_x"], s["bin_y"], marker="o", ms=3, color=colours(i), label=m)
  axes[0].plot(ds, series["outline"], ls=":", color="k", label="outline's own IoU")
  axes[0].set_xlabel("outline offset d (pixels at 100x100; < 0 inside the object)")
  axes[0].set_ylabel("IoU at full resolution (mean, 95% CI over images)")
  axes[1].plot([0, 1], [0, 1], ls=":", color="k", lw=1, label="y = outline IoU")
  axes[1].set_xlabel("outline's own IoU (full resolution; bins of 0.05)")
  axes[1].set_ylabel("IoU at full resolution (bin mean)")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  axes[1].legend(fontsize=7, loc="upper left")
  fig.tight_layout()
  _save_figure(fig, path)


def speed_sweep(rows: Sequence[dict], path: str) -> None:
  """Training samples/s and MFU against the batch, one line per width (the speed
  benchmark's sweep; the torch peer dashed where it was measured)."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for w in sorted({r["width"] for r in rows}):
    rs = sorted((r for r in rows if r["width"] == w), key=lambda r: r["batch"])
    b = [r["batch"] for r in rs]
    line, = axes[0].plot(b, [r["samples_per_s"] or r["infer_samples_per_s"] for r in rs], "o-",
                         label=f"width {w:g} (C={rs[0]['in_channels']})")
    if any(r.get("peer_samples_per_s") for r in rs):
      axes[0].plot(b, [r.get("peer_samples_per_s") or np.nan for r in rs], "x--",
                   color=line.get_color(), label=f"torch, width {w:g}")
    axes[1].plot(b, [100 * (r["mfu"] or 0) for r in rs], "o-", color=line.get_color())
  for ax, label in zip(axes, ("training samples / s", "MFU (%)")):
    ax.set_xscale("log")
    ax.set_xlabel("batch")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
  axes[0].set_yscale("log")
  axes[0].legend(fontsize=7)
  r0 = rows[0]
  fig.suptitle(f"{r0['impl']} {r0['dtype']} on {r0['device_kind']} ({r0['platform']}); "
               f"peak {r0['peak_gflops']:.0f} GFLOP/s ({r0['peak_source'][:40]})", fontsize=9)
  fig.tight_layout()
  _save_figure(fig, path, dpi=110)


def noc_curve(series: dict, thresholds: Sequence[float], path: str) -> None:
  """Mean IoU against the number of corrections, one line and 95% band per method,
  the NoC thresholds dotted (`evaluation.corrections.curve_series`'s dict)."""
  fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  for i, (m, s) in enumerate(series.items()):
    k = np.arange(len(s))
    colour = plt.get_cmap("tab10")(i)
    ax.plot(k, s[:, 0], marker="o", ms=3, color=colour, label=m)
    ax.fill_between(k, s[:, 0] - np.nan_to_num(s[:, 1]), s[:, 0] + np.nan_to_num(s[:, 1]),
                    color=colour, alpha=0.15, lw=0)
  for t in thresholds:
    ax.axhline(t, ls=":", color="k", lw=1)
  low = min(float(np.nanmin(s[:, 0])) for s in series.values())
  ax.set_ylim(max(0.0, low - 0.1), 1.0)  # IoU ends at 1; a wide interval need not squash it
  ax.set_xlabel("corrections (simulated clicks after the outline)")
  ax.set_ylabel("IoU at full resolution (mean, 95% CI over images)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  _save_figure(fig, path)
