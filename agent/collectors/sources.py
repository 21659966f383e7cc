"""Reading /proc and /sys files, and naming why a source could not be read.

Every collector reads its files through these helpers, so that the errors an OS can raise for
an expected condition (file missing on this kernel, no permission) are caught in one shape:
``SOURCE_ERRORS``. Files are read as bytes with ``os.open``/``os.read`` (no Python file object,
no decoding: about half the cost of ``open().read()`` for a small /proc file); ``int()`` and
``float()`` take bytes as they are. Reasons name only /proc or /sys paths, never a user's file.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

SOURCE_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, IndexError, psutil.Error)
"""What reading a source may raise for an expected OS condition (Value/IndexError: garbled)."""

CHUNK = 4096
"""Bytes per read(2). A /proc sysctl read allocates a kernel buffer of the size asked for, so
larger is slower for the small files; seq files hand out about a page per read anyway."""


def read_bytes(path: str) -> bytes:
    """The whole file. Reads until end of file: a seq file may return less than asked."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, CHUNK)
        if data:
            chunk = os.read(fd, CHUNK)
            while chunk:
                data += chunk
                chunk = os.read(fd, CHUNK)
        return data
    finally:
        os.close(fd)


def read_head(path: str, size: int = CHUNK) -> bytes:
    """The first ``size`` bytes (or fewer) of a file: one read(2), for a leading line."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def read_int(path: str) -> int:
    return int(read_bytes(path).split()[0])


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


def why(path: str | Path, exc: BaseException) -> str:
    """``"/proc/vmstat missing"`` — for /proc and /sys paths only."""
    return f"{path} {describe(exc)}"
