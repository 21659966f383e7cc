"""Reading /proc and /sys files, and naming why a source could not be read.

Every collector reads its files with plain ``open().read()`` through these helpers, so that the
errors an OS can raise for an expected condition (file missing on this kernel, no permission)
are caught in one shape: ``SOURCE_ERRORS``. Reasons name only /proc or /sys paths, never a
user's file.
"""

from __future__ import annotations

from pathlib import Path

import psutil

SOURCE_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, IndexError, psutil.Error)
"""What reading a source may raise for an expected OS condition (Value/IndexError: garbled)."""


def read_text(path: Path) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def read_int(path: Path) -> int:
    return int(read_text(path).split()[0])


def describe(exc: BaseException) -> str:
    """A short human reason for a failed read, without file names from the exception."""
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, PermissionError | psutil.AccessDenied):
        return "permission denied"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, ValueError | IndexError):
        return "unexpected content"
    return type(exc).__name__


def why(path: Path, exc: BaseException) -> str:
    """``"/proc/vmstat missing"`` — for /proc and /sys paths only."""
    return f"{path} {describe(exc)}"
