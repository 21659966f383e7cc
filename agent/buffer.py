"""The ring buffer: recent samples of every series, in RAM only, in fixed-size numeric arrays.

All series share one time axis (one slot per collection cycle). Each series owns an
``array('f')`` (float32) of ``capacity`` values, NaN where the series had no sample in that
cycle. At most ``max_series`` series exist, so the memory bound is known at start-up:
``capacity * (8 + 4 * max_series)`` bytes. A new series past the bound first evicts one that has
had no sample for a whole window; if none is stale, the new series is not kept (and counted).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from agent.samples import Sample, SeriesKey

_NAN = float("nan")
_VALUE_TYPE = "f"
"""Values are float32: 7 significant digits are plenty for health figures and thresholds, and
a 1-hour buffer at 1 s costs 14 KiB per series instead of 28 KiB. Timestamps stay float64."""
_VALUE_BYTES = 4
_TIME_BYTES = 8


class RingBuffer:
    def __init__(self, capacity: int, max_series: int = 512) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2 slots")
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.capacity = capacity
        self.max_series = max_series
        self._times = array("d", [_NAN]) * capacity
        self._series: dict[SeriesKey, array[float]] = {}
        self._last_slot: dict[SeriesKey, int] = {}
        self._cycles = 0
        self.rejected_series = 0

    # -- sizes -----------------------------------------------------------------------------
    @property
    def bound_bytes(self) -> int:
        """The most this buffer can ever hold, known at start-up."""
        return self.capacity * (_TIME_BYTES + self.max_series * _VALUE_BYTES)

    @property
    def nbytes(self) -> int:
        """What it holds now (the numeric arrays; dict overhead is small and bounded)."""
        return self.capacity * (_TIME_BYTES + len(self._series) * _VALUE_BYTES)

    @property
    def series_count(self) -> int:
        return len(self._series)

    # -- writing ---------------------------------------------------------------------------
    def append(self, ts: float, samples: Sequence[Sample]) -> None:
        """Store one cycle. Series without a sample this cycle get NaN in its slot."""
        slot = self._cycles % self.capacity
        self._cycles += 1
        self._times[slot] = ts
        for column in self._series.values():
            column[slot] = _NAN
        for sample in samples:
            key = SeriesKey(sample.metric, sample.labels)
            values = self._series.get(key) or self._allocate(key)
            if values is None:
                continue
            values[slot] = sample.value
            self._last_slot[key] = self._cycles

    def _allocate(self, key: SeriesKey) -> array[float] | None:
        if len(self._series) >= self.max_series and not self._evict_stale():
            self.rejected_series += 1
            return None
        values = array(_VALUE_TYPE, [_NAN]) * self.capacity
        self._series[key] = values
        return values

    def _evict_stale(self) -> bool:
        oldest = min(self._last_slot, key=self._last_slot.__getitem__, default=None)
        if oldest is None or self._cycles - self._last_slot[oldest] < self.capacity:
            return False
        del self._series[oldest]
        del self._last_slot[oldest]
        return True

    # -- reading ---------------------------------------------------------------------------
    def values(self, key: SeriesKey, since: float, until: float) -> list[float]:
        """The series' values with a timestamp in [since, until], oldest first.

        Walks back from the newest slot and stops at the first slot older than ``since``, so a
        short window costs a few slots, not the whole capacity."""
        values = self._series.get(key)
        if values is None:
            return []
        out: list[float] = []
        times = self._times
        capacity = self.capacity
        for n in range(self._cycles - 1, max(-1, self._cycles - 1 - capacity), -1):
            slot = n % capacity
            ts = times[slot]
            if ts < since:
                break
            if ts <= until:
                value = values[slot]
                if value == value:  # not NaN
                    out.append(value)
        out.reverse()
        return out

    def latest(self, key: SeriesKey) -> float | None:
        values = self._series.get(key)
        if values is None or self._cycles == 0:
            return None
        value = values[(self._cycles - 1) % self.capacity]
        return None if value != value else value

    def series(self) -> list[SeriesKey]:
        return list(self._series)
