"""Counter readings turned into per-cycle deltas, with resets (a value that went down) dropped."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class CounterDeltas(Generic[K]):
    """The previous reading of a set of counters and when it was taken.

    ``update`` stores the new reading and returns ``(elapsed, deltas)``: the seconds since the
    previous reading and, for each key present in both readings whose value did not decrease,
    its increase. The first reading (or one that does not advance the clock) returns None. A
    key whose value decreased (a counter reset or wrap) is left out of that cycle's deltas.
    """

    __slots__ = ("_prev", "_prev_now")

    def __init__(self) -> None:
        self._prev: Mapping[K, float] = {}
        self._prev_now: float | None = None

    def update(self, now: float, reading: Mapping[K, float]) -> tuple[float, dict[K, float]] | None:
        prev, prev_now = self._prev, self._prev_now
        self._prev, self._prev_now = reading, now
        if prev_now is None or now <= prev_now:
            return None
        deltas: dict[K, float] = {}
        for key, value in reading.items():
            before = prev.get(key)
            if before is not None and value >= before:
                deltas[key] = value - before
        return now - prev_now, deltas

    def reset(self) -> None:
        """Forget the previous reading (the source became unreadable)."""
        self._prev, self._prev_now = {}, None
