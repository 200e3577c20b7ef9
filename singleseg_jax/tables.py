"""Result tables: CSV files, markdown tables, and means with 95% Student-t intervals."""
from __future__ import annotations

import csv
import os
import tempfile
from typing import Iterable, Sequence

import numpy as np
from scipy import stats


def mean_ci(values) -> tuple[float, float]:
  """(mean, half-width of the 95% Student-t interval) of the finite values.

  The half-width is nan for fewer than two values; both are nan for none.
  """
  v = np.asarray(list(values), np.float64)
  v = v[np.isfinite(v)]
  if len(v) == 0:
    return float("nan"), float("nan")
  mean = float(v.mean())
  if len(v) < 2:
    return mean, float("nan")
  half = float(stats.t.ppf(0.975, len(v) - 1)) * float(v.std(ddof=1)) / np.sqrt(len(v))
  return mean, half


def fmt(mean: float, half: float = float("nan"), digits: int = 3) -> str:
  """'mean ± half' with `digits` decimals ('–' for no mean, no ± for no interval)."""
  if not np.isfinite(mean):
    return "–"
  if not np.isfinite(half):
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
  """The lines of a markdown table (cells converted with str)."""
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return lines


def atomic_write(path: str, text: str | bytes) -> None:
  """Writes `path` whole or not at all (a temporary file beside it, then a rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(text.encode() if isinstance(text, str) else text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def csv_text(rows: Sequence[dict], fields: Sequence[str] | None = None) -> str:
  """Rows as CSV with a header (`fields`, default the first row's keys; extra keys dropped)."""
  import io  # noqa: PLC0415
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(fields or rows[0]), extrasaction="ignore",
                          lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return buf.getvalue()


def write_csv(path: str, rows: Sequence[dict], fields: Sequence[str] | None = None) -> None:
  """Writes rows with a header to `path`, atomically."""
  atomic_write(path, csv_text(rows, fields))


def append_csv(path: str, rows: Sequence[dict], fields: Sequence[str]) -> None:
  """Appends rows (no header) to a CSV written by `write_csv`."""
  with open(path, "a", newline="") as f:
    csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore",
                   lineterminator="\n").writerows(rows)


def read_csv(path: str) -> list[dict]:
  """The rows of a CSV file with a header, as dicts of strings."""
  with open(path, newline="") as f:
    return list(csv.DictReader(f))
