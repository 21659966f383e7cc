"""Token buckets: bursts, refill by a moved clock, failure-only limiting, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from server.clock import FakeClock
from server.errors import TooManyRequests
from server.ratelimit import RateLimiter


def test_burst_then_limited_with_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    for _ in range(10):
        limiter.check("register", "10.0.0.1", rate=5 / 60, burst=10)
    with pytest.raises(TooManyRequests) as info:
        limiter.check("register", "10.0.0.1", rate=5 / 60, burst=10)
    assert info.value.retry_after == pytest.approx(12.0)
    assert info.value.status == 429
    clock.advance(11.9)
    with pytest.raises(TooManyRequests):
        limiter.check("register", "10.0.0.1", rate=5 / 60, burst=10)
    clock.advance(0.2)
    limiter.check("register", "10.0.0.1", rate=5 / 60, burst=10)


def test_keys_and_scopes_are_separate() -> None:
    limiter = RateLimiter(FakeClock())
    limiter.check("a", "k", rate=1, burst=1)
    limiter.check("a", "other", rate=1, burst=1)
    limiter.check("b", "k", rate=1, burst=1)
    with pytest.raises(TooManyRequests):
        limiter.check("a", "k", rate=1, burst=1)


def test_ensure_and_spend_limit_failures_only() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    for _ in range(100):
        limiter.ensure("fail", "k", rate=0.5, burst=3)  # successes spend nothing
    for _ in range(5):
        limiter.spend("fail", "k", rate=0.5, burst=3)  # never raises, floors at 0
    with pytest.raises(TooManyRequests) as info:
        limiter.ensure("fail", "k", rate=0.5, burst=3)
    assert info.value.retry_after == pytest.approx(2.0)
    clock.advance(2.0)
    limiter.ensure("fail", "k", rate=0.5, burst=3)


def test_full_buckets_are_swept() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    for i in range(50):
        limiter.check("s", f"k{i}", rate=1, burst=2)
    assert len(limiter) == 50
    clock.advance(10)
    for _ in range(30):
        limiter.check("s", "fresh", rate=1, burst=2)
        clock.advance(1)
    assert len(limiter) <= 2


def test_entries_are_capped() -> None:
    limiter = RateLimiter(FakeClock(), max_entries=100)
    for i in range(10_000):
        limiter.spend("flood", f"k{i}", rate=0.001, burst=5)
    assert len(limiter) == 100


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (-1, 5), (1, 0), (float("inf"), 1), (1, float("nan"))]
)
def test_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate must be"):
        RateLimiter(FakeClock()).check("s", "k", rate=rate, burst=burst)
    with pytest.raises(ValueError, match="max_entries"):
        RateLimiter(FakeClock(), max_entries=0)


@given(
    steps=st.lists(st.floats(min_value=0, max_value=30), min_size=1, max_size=200),
    rate=st.floats(min_value=0.01, max_value=10),
    burst=st.integers(min_value=1, max_value=20),
)
@settings(max_examples=200, deadline=None)
def test_never_more_than_burst_plus_refill(steps: list[float], rate: float, burst: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    allowed = 0
    waits: list[float] = []
    for step in steps:
        clock.advance(step)
        try:
            limiter.check("p", "k", rate=rate, burst=burst)
            allowed += 1
        except TooManyRequests as exc:
            waits.append(exc.retry_after)
    assert all(0 < wait <= 1 / rate + 1e-9 for wait in waits)
    assert allowed <= burst + rate * sum(steps) + 1e-6
