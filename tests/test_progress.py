"""Progress: rate and time left from the units done since the start."""
from singleseg_jax import progress


def test_rate_and_eta_count_only_this_run(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
  p = progress.Progress(total=10, start=4)  # 4 done before a resume
  assert p.seconds_per_unit == 0.0 and p.eta == 0.0
  now[0] += 6.0
  p.update(7)  # 3 units in 6 s
  assert p.seconds_per_unit == 2.0 and p.eta == 6.0
  assert str(p) == "7/10, 2.00 s each, ETA 0:00:06"
  assert progress.hms(3725) == "1:02:05"
