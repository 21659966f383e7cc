"""Kernel clock synchronisation, read with adjtimex(2) in read-only mode (modes = 0)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence

from agent.samples import Sample, SourceUnavailable

STA_UNSYNC = 0x0040
TIME_ERROR = 5


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (64-bit Linux layout)."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),  # microseconds
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    )


_libc_adjtimex: Callable[[ctypes._CArgObject], int] | None = None


def read_adjtimex() -> tuple[int, int, float]:
    """(return code, status bits, maxerror in seconds) from adjtimex(2) with modes = 0.

    Raises OSError when the call fails (e.g. ENOSYS under a sandbox).
    """
    global _libc_adjtimex
    if _libc_adjtimex is None:
        # The process's own symbols include libc's (ctypes.util.find_library would spawn).
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.adjtimex
        fn.argtypes = (ctypes.POINTER(_Timex),)
        fn.restype = ctypes.c_int
        _libc_adjtimex = fn
    tx = _Timex()
    tx.modes = 0  # read only: never set anything
    rc = _libc_adjtimex(ctypes.byref(tx))
    if rc < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return rc, tx.status, tx.maxerror / 1e6


class ClockCollector:
    """clock_synchronized (1/0) and clock_max_error_seconds.

    Unsynchronised when the status has STA_UNSYNC or the call returns TIME_ERROR.
    """

    name = "clock"

    def __init__(self, *, adjtimex: Callable[[], tuple[int, int, float]] = read_adjtimex) -> None:
        self._adjtimex = adjtimex

    def collect(self, now: float) -> Sequence[Sample]:
        try:
            rc, status, max_error = self._adjtimex()
        except (OSError, AttributeError) as exc:  # AttributeError: libc without adjtimex
            reason = exc.strerror if isinstance(exc, OSError) else "no adjtimex in libc"
            raise SourceUnavailable(f"kernel clock state unreadable ({reason})") from None
        synced = not (status & STA_UNSYNC) and rc != TIME_ERROR
        return [
            Sample("clock_synchronized", 1.0 if synced else 0.0),
            Sample("clock_max_error_seconds", max_error),
        ]
