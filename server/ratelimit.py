"""In-memory token buckets keyed by (scope, key), with bounded memory.

    limiter.check("register", peer, rate=5 / 60, burst=10)   # spend one token or raise 429

``rate`` is tokens per second, ``burst`` the bucket size. Three uses: :meth:`check` spends a
token and raises :class:`~server.errors.TooManyRequests` when none is left (for every attempt
of a costly action); :meth:`ensure` only raises (nothing spent) and :meth:`spend` only spends
(never raises) — together they limit *failed* attempts: ``ensure`` before trying, ``spend`` when
the attempt failed.

Memory: a full bucket is the same as no bucket, so full buckets are dropped (a few of the
least recently used are examined on every call) and the table never holds more than
``max_entries`` buckets — past that the least recently used is evicted (under a flood of
distinct keys that gives an evicted key a fresh bucket; the flood itself is what the cap
bounds). Keys live in memory only and are never logged. The state is per process: with several
replicas each limits on its own.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from server.clock import Clock
from server.errors import TooManyRequests

DEFAULT_MAX_ENTRIES: Final = 100_000
_SWEEP_PER_CALL: Final = 2


@dataclass(frozen=True, slots=True)
class Rate:
    """A named limit: ``per_second`` tokens refill, ``burst`` is the bucket size."""

    per_second: float
    burst: float


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def wait(self) -> float:
        """Seconds until one whole token is available."""
        return max(0.0, (1.0 - self.tokens) / self.rate)


class RateLimiter:
    def __init__(self, clock: Clock, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._max = max_entries
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, scope: str, key: str, *, rate: float, burst: float) -> None:
        """Spend one token for (scope, key); raise TooManyRequests when there is none."""
        bucket = self._bucket(scope, key, rate, burst)
        if bucket.tokens < 1.0:
            raise TooManyRequests("too many requests; slow down", retry_after=bucket.wait())
        bucket.tokens -= 1.0

    def ensure(self, scope: str, key: str, *, rate: float, burst: float) -> None:
        """Raise TooManyRequests if (scope, key) has no token left; spend nothing."""
        bucket = self._buckets.get((scope, key))
        if bucket is None:
            return
        bucket.refill(self._clock.monotonic())
        if bucket.tokens < 1.0:
            self._buckets.move_to_end((scope, key))
            raise TooManyRequests("too many failed attempts; slow down", retry_after=bucket.wait())

    def spend(self, scope: str, key: str, *, rate: float, burst: float) -> None:
        """Spend one token if there is one (a failed attempt); never raises."""
        bucket = self._bucket(scope, key, rate, burst)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)

    def _bucket(self, scope: str, key: str, rate: float, burst: float) -> _Bucket:
        if not (rate > 0 and math.isfinite(rate) and burst >= 1 and math.isfinite(burst)):
            raise ValueError("rate must be > 0 and burst >= 1")
        now = self._clock.monotonic()
        self._sweep(now)
        ident = (scope, key)
        bucket = self._buckets.get(ident)
        if bucket is None:
            bucket = self._buckets[ident] = _Bucket(rate, burst, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            bucket.rate, bucket.burst = rate, burst
            bucket.refill(now)
            self._buckets.move_to_end(ident)
        return bucket

    def _sweep(self, now: float) -> None:
        """Drop up to a few least-recently-used buckets that have refilled completely."""
        for _ in range(_SWEEP_PER_CALL):
            if not self._buckets:
                return
            ident, bucket = next(iter(self._buckets.items()))
            bucket.refill(now)
            if bucket.tokens < bucket.burst:
                return
            del self._buckets[ident]
