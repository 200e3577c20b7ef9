"""Intervals, formatting, markdown and CSV files."""
import os

import numpy as np
import pytest
from scipy import stats

from singleseg_jax import tables


def test_mean_ci_is_the_student_t_interval():
  mean, half = tables.mean_ci([1.0, 2.0, 3.0])
  assert mean == 2.0 and half == pytest.approx(4.3027 / np.sqrt(3), rel=1e-4)
  rng = np.random.default_rng(0)
  v = rng.normal(size=40)
  lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
  assert tables.mean_ci(v)[1] == pytest.approx((hi - lo) / 2)
  assert tables.mean_ci([np.nan, 4.0])[0] == 4.0 and np.isnan(tables.mean_ci([4.0])[1])
  assert np.isnan(tables.mean_ci([])[0])


def test_fmt_and_markdown_table():
  assert tables.fmt(0.12345, 0.01) == "0.123 ± 0.010"
  assert tables.fmt(0.5) == "0.500" and tables.fmt(float("nan")) == "–"
  assert tables.markdown_table(["a", "b"], [[1, "x"]]) == ["| a | b |", "| --- | --- |",
                                                          "| 1 | x |"]


def test_csv_round_trip_and_append(tmp_path):
  path = str(tmp_path / "t.csv")
  tables.write_csv(path, [{"a": 1, "b": 2, "extra": 3}], ["a", "b"])
  tables.append_csv(path, [{"a": 4, "b": 5}], ["a", "b"])
  assert tables.read_csv(path) == [{"a": "1", "b": "2"}, {"a": "4", "b": "5"}]
  tables.write_csv(path, [], ["a", "b"])
  assert open(path).read() == "a,b\n"


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
  path = tmp_path / "f.txt"
  tables.atomic_write(str(path), "old")
  with pytest.raises(TypeError):
    tables.atomic_write(str(path), 12345)  # neither str nor bytes: fails mid-write
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
