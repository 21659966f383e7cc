"""System-wide file handles from /proc/sys/fs/file-nr."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.collectors.sources import SOURCE_ERRORS, read_bytes, why
from agent.samples import Sample, SourceUnavailable


class FdCollector:
    """fd_allocated and fd_used_percent ((allocated - unused) of fs.file-max).

    fs.file-max may be huge (9223372036854775807 on recent kernels): the percent is then tiny.
    """

    name = "fds"

    def __init__(self, *, proc_root: Path = Path("/proc")) -> None:
        self._file_nr = str(proc_root / "sys" / "fs" / "file-nr")

    def collect(self, now: float) -> Sequence[Sample]:
        try:
            allocated, unused, maximum = map(int, read_bytes(self._file_nr).split()[:3])
        except SOURCE_ERRORS as exc:
            msg = f"file handle counts unreadable: {why(self._file_nr, exc)}"
            raise SourceUnavailable(msg) from None
        out = [Sample("fd_allocated", float(allocated))]
        if maximum > 0:
            out.append(Sample("fd_used_percent", (allocated - unused) / maximum * 100.0))
        return out
