"""Progress of long work: done / total, the rate so far and the time left."""
from __future__ import annotations

import time


def hms(seconds: float) -> str:
  """Seconds as H:MM:SS."""
  seconds = int(round(max(seconds, 0)))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
  """Counts finished units of work against a total and says how long the rest takes.

  The rate counts only the units done since this object was made (`start` of them
  were done before: a resumed run), so compilation on the first unit is in it.
  """

  def __init__(self, total: int, start: int = 0):
    self.total, self.start = total, start
    self.done = start
    self.t0 = time.perf_counter()

  def update(self, done: int) -> None:
    """Records that `done` units (of `total`) are finished."""
    self.done = done

  @property
  def seconds_per_unit(self) -> float:
    """Wall seconds per unit since the start (0 before the first unit)."""
    n = self.done - self.start
    return (time.perf_counter() - self.t0) / n if n > 0 else 0.0

  @property
  def eta(self) -> float:
    """Seconds until `total` at the rate so far."""
    return self.seconds_per_unit * max(self.total - self.done, 0)

  def __str__(self) -> str:
    return (f"{self.done}/{self.total}, {self.seconds_per_unit:.2f} s each, "
            f"ETA {hms(self.eta)}")
