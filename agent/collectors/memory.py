"""Memory and swap (/proc/meminfo), OOM kills (/proc/vmstat) and pressure stall information (PSI).

/proc/meminfo is read once a cycle for both memory and swap, with psutil's arithmetic
(``virtual_memory().available``, ``swap_memory().percent``) but none of its other fields.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from agent.collectors.sources import SOURCE_ERRORS, read_bytes, why
from agent.samples import Sample, SourceUnavailable, labels

PSI_RESOURCES = ("cpu", "memory", "io")


def find_field(data: bytes, key: bytes) -> int | None:
    """The number after ``key`` at the start of a line (``b"MemTotal:"``, ``b"oom_kill "``),
    or None if no line starts with it."""
    if data.startswith(key):
        start = len(key)
    else:
        pos = data.find(b"\n" + key)
        if pos < 0:
            return None
        start = pos + 1 + len(key)
    end = data.find(b"\n", start)
    return int((data[start:] if end < 0 else data[start:end]).split()[0])


def find_vmstat(data: bytes, field: str) -> int | None:
    """The value of one ``name value`` line of /proc/vmstat, or None if the kernel lacks it."""
    return find_field(data, field.encode() + b" ")


def parse_psi(data: bytes) -> dict[str, float]:
    """``{"some": avg10, "full": avg10}`` from a /proc/pressure/<resource> file."""
    out: dict[str, float] = {}
    for line in data.split(b"\n"):
        kind, _, rest = line.partition(b" ")
        for field in rest.split():
            if field.startswith(b"avg10="):
                out[kind.decode("ascii", "replace")] = float(field[6:])
                break
    return out


def _kb(data: bytes, key: bytes) -> int | None:
    value = find_field(data, key)
    return None if value is None else value * 1024


def estimate_available(meminfo: bytes, zoneinfo: str) -> int:
    """psutil's estimate of available memory, in bytes, for a kernel without MemAvailable
    (before 3.14) or one reporting 0: free + page cache + reclaimable slab, less the zones' low
    watermarks; free + cached when a figure it needs is missing."""
    free = _kb(meminfo, b"MemFree:")
    if free is None:
        raise ValueError("no MemFree")
    fallback = free + (_kb(meminfo, b"Cached:") or 0)
    active_file = _kb(meminfo, b"Active(file):")
    inactive_file = _kb(meminfo, b"Inactive(file):")
    slab_reclaimable = _kb(meminfo, b"SReclaimable:")
    if active_file is None or inactive_file is None or slab_reclaimable is None:
        return fallback
    try:
        zones = read_bytes(zoneinfo)
    except OSError:
        return fallback
    watermark_low = 0
    for line in zones.split(b"\n"):
        line = line.strip()
        if line.startswith(b"low"):
            watermark_low += int(line.split()[1])
    watermark_low *= os.sysconf("SC_PAGE_SIZE")
    avail: float = free - watermark_low
    pagecache = active_file + inactive_file
    avail += pagecache - min(pagecache / 2, watermark_low)
    avail += slab_reclaimable - min(slab_reclaimable / 2.0, watermark_low)
    return int(avail)


class MemoryCollector:
    """memory_available_percent/bytes, memory_total_bytes, swap_used_percent, oom_kills,
    pressure_some_avg10{resource}, pressure_full_avg10{resource}.

    Available memory is MemAvailable, estimated as psutil does when the kernel lacks it (or
    reports 0), capped as psutil caps it; swap_used_percent is rounded to 0.1 as psutil rounds
    it, and 0 without swap.
    """

    name = "memory"

    def __init__(self, *, proc_root: Path = Path("/proc")) -> None:
        self._meminfo = str(proc_root / "meminfo")
        self._zoneinfo = str(proc_root / "zoneinfo")
        self._vmstat = str(proc_root / "vmstat")
        self._pressure = [
            (str(proc_root / "pressure" / r), labels(resource=r)) for r in PSI_RESOURCES
        ]
        self._prev_oom: int | None = None
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        out: list[Sample] = []
        problems: list[str] = []
        try:
            meminfo = read_bytes(self._meminfo)
            total, available = self._memory(meminfo)
        except SOURCE_ERRORS as exc:
            msg = f"memory figures unreadable: {why(self._meminfo, exc)}"
            raise SourceUnavailable(msg) from None
        if total > 0:
            out.append(Sample("memory_total_bytes", float(total)))
            out.append(Sample("memory_available_bytes", float(available)))
            out.append(Sample("memory_available_percent", available / total * 100.0))
        try:
            swap_total = _kb(meminfo, b"SwapTotal:")
            swap_free = _kb(meminfo, b"SwapFree:")
        except SOURCE_ERRORS:
            swap_total = swap_free = None
        if swap_total is None or swap_free is None:
            problems.append(f"swap figures absent (no SwapTotal/SwapFree in {self._meminfo})")
        else:
            percent = round((swap_total - swap_free) / swap_total * 100, 1) if swap_total else 0.0
            out.append(Sample("swap_used_percent", percent))
        self._oom_kills(out, problems)
        self._psi(out, problems)
        self._problems = tuple(problems)
        return out

    def _memory(self, meminfo: bytes) -> tuple[int, int]:
        """(total, available) in bytes, as ``psutil.virtual_memory()`` computes them."""
        total = _kb(meminfo, b"MemTotal:")
        if total is None:
            raise ValueError("no MemTotal")
        available = _kb(meminfo, b"MemAvailable:")
        if not available:  # missing (kernel before 3.14) or 0 (a kernel bug psutil works around)
            available = estimate_available(meminfo, self._zoneinfo)
        if available < 0:
            available = 0
        elif available > total:  # inside some containers: psutil then reports MemFree
            available = _kb(meminfo, b"MemFree:") or 0
        return total, available

    def _oom_kills(self, out: list[Sample], problems: list[str]) -> None:
        try:
            value = find_field(read_bytes(self._vmstat), b"oom_kill ")
        except SOURCE_ERRORS as exc:
            self._prev_oom = None
            problems.append(f"OOM kill counter unreadable: {why(self._vmstat, exc)}")
            return
        if value is None:
            self._prev_oom = None
            problems.append(
                f"OOM kill counter absent (no oom_kill in {self._vmstat}; kernel before 4.13)"
            )
            return
        prev, self._prev_oom = self._prev_oom, value
        if prev is not None and value >= prev:
            out.append(Sample("oom_kills", float(value - prev)))

    def _psi(self, out: list[Sample], problems: list[str]) -> None:
        failures: list[str] = []
        for path, res in self._pressure:
            try:
                avg10 = parse_psi(read_bytes(path))
            except SOURCE_ERRORS as exc:
                failures.append(why(path, exc))
                continue
            if "some" in avg10:
                out.append(Sample("pressure_some_avg10", avg10["some"], res))
            if "full" in avg10:
                out.append(Sample("pressure_full_avg10", avg10["full"], res))
        if len(failures) == len(self._pressure) and all(f.endswith(" missing") for f in failures):
            problems.append("pressure stall information not available (kernel without PSI)")
        elif failures:
            problems.append("pressure stall information unreadable: " + ", ".join(failures))
