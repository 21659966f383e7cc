from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.collectors.clock import STA_UNSYNC, TIME_ERROR, ClockCollector, read_adjtimex
from agent.samples import SourceUnavailable

from .collector_testkit import assert_valid, plain

STA_PLL = 0x0001
STA_NANO = 0x2000


def reading(rc: int, status: int, max_error: float) -> Callable[[], tuple[int, int, float]]:
    return lambda: (rc, status, max_error)


@pytest.mark.parametrize(
    ("rc", "status", "synced"),
    [
        (0, STA_PLL | STA_NANO, 1.0),  # TIME_OK, NTP disciplining the clock
        (0, STA_PLL | STA_UNSYNC, 0.0),
        (TIME_ERROR, STA_PLL, 0.0),
        (TIME_ERROR, STA_UNSYNC, 0.0),  # as recorded on an unsynchronised container host
    ],
)
def test_synchronised_from_status_and_return_code(rc: int, status: int, synced: float) -> None:
    samples = ClockCollector(adjtimex=reading(rc, status, 0.125)).collect(1.0)
    assert_valid(samples)
    assert plain(samples) == {"clock_synchronized": synced, "clock_max_error_seconds": 0.125}


def test_adjtimex_failure_is_unavailable() -> None:
    def denied() -> tuple[int, int, float]:
        raise OSError(38, "Function not implemented")

    with pytest.raises(SourceUnavailable, match=r"unreadable \(Function not implemented\)"):
        ClockCollector(adjtimex=denied).collect(1.0)


def test_real_adjtimex_reads_or_fails_cleanly() -> None:
    try:
        rc, status, max_error = read_adjtimex()
    except OSError:
        return
    assert 0 <= rc <= TIME_ERROR
    assert status >= 0
    assert max_error >= 0.0
