"""The ring buffer: fixed-size numeric storage with a memory bound known at start-up."""

from __future__ import annotations

from array import array

import pytest

from agent.buffer import RingBuffer
from agent.samples import Sample, SeriesKey, labels

ROOT = SeriesKey("disk_used_percent", labels(mount="/"))


def test_bound_is_known_at_start_and_never_exceeded() -> None:
    buf = RingBuffer(capacity=3600, max_series=200)
    assert buf.bound_bytes == 3600 * 8 + 200 * 3600 * 4  # float64 times, float32 values
    for cycle in range(50):
        buf.append(float(cycle), [Sample("m", 1.0, labels(mount=f"/m{i}")) for i in range(300)])
    assert buf.series_count == 200
    assert buf.nbytes <= buf.bound_bytes
    assert buf.rejected_series == 100 * 50


def test_series_are_numeric_arrays_not_lists() -> None:
    buf = RingBuffer(capacity=10)
    buf.append(1.0, [Sample("load1", 0.5)])
    assert all(isinstance(v, array) and v.typecode == "f" for v in buf._series.values())


def test_float32_keeps_health_figures_close() -> None:
    buf = RingBuffer(capacity=4)
    buf.append(1.0, [Sample("memory_total_bytes", 25_769_803_776.0), Sample("load1", 0.1)])
    assert buf.latest(SeriesKey("memory_total_bytes", ())) == 25_769_803_776.0
    assert abs((buf.latest(SeriesKey("load1", ())) or 0) - 0.1) < 1e-7


def test_values_window_and_wraparound() -> None:
    buf = RingBuffer(capacity=4)
    for t in range(10):
        buf.append(float(t), [Sample("disk_used_percent", float(t * 10), labels(mount="/"))])
    assert buf.values(ROOT, 0, 100) == [60.0, 70.0, 80.0, 90.0]
    assert buf.values(ROOT, 7, 8) == [70.0, 80.0]
    assert buf.latest(ROOT) == 90.0


def test_missing_cycles_are_gaps_not_stale_values() -> None:
    buf = RingBuffer(capacity=5)
    buf.append(1.0, [Sample("load1", 1.0)])
    buf.append(2.0, [])
    buf.append(3.0, [Sample("load1", 3.0)])
    key = SeriesKey("load1", ())
    assert buf.values(key, 0, 10) == [1.0, 3.0]
    buf.append(4.0, [])
    assert buf.latest(key) is None
    assert buf.values(SeriesKey("nope", ()), 0, 10) == []


def test_stale_series_are_evicted_for_new_ones() -> None:
    buf = RingBuffer(capacity=3, max_series=1)
    buf.append(1.0, [Sample("a", 1.0)])
    for t in range(2, 6):
        buf.append(float(t), [])
    buf.append(6.0, [Sample("b", 2.0)])
    assert buf.series() == [SeriesKey("b", ())]
    assert buf.rejected_series == 0
    assert buf.latest(SeriesKey("b", ())) == 2.0


@pytest.mark.parametrize(("capacity", "max_series"), [(1, 10), (10, 0)])
def test_bad_sizes_are_refused(capacity: int, max_series: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        RingBuffer(capacity, max_series)
