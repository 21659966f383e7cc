"""CPU use from deltas of the kernel's CPU times, load averages, CPU count and uptime."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import psutil

from agent.collectors.counters import CounterDeltas
from agent.collectors.sources import SOURCE_ERRORS, describe, read_head
from agent.samples import Sample, SourceUnavailable

CPU_COUNT_REFRESH_SECONDS = 30.0


class CpuTimes(Protocol):
    """The fields of ``psutil.cpu_times()`` used here (seconds, all cores)."""

    @property
    def user(self) -> float: ...
    @property
    def nice(self) -> float: ...
    @property
    def system(self) -> float: ...
    @property
    def idle(self) -> float: ...
    @property
    def iowait(self) -> float: ...
    @property
    def irq(self) -> float: ...
    @property
    def softirq(self) -> float: ...
    @property
    def steal(self) -> float: ...


class StatCpuTimes(NamedTuple):
    """The leading ``cpu`` line of /proc/stat, in seconds (as ``psutil.cpu_times()``)."""

    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float


def stat_cpu_times(proc_root: Path = Path("/proc")) -> Callable[[], StatCpuTimes]:
    """A ``cpu_times`` reading only the first line of ``<proc_root>/stat`` (one read(2)).

    Older kernels without a steal column (before 2.6.11) read 0 there, as psutil leaves it out.
    """
    path = str(proc_root / "stat")
    ticks = float(os.sysconf("SC_CLK_TCK"))

    def cpu_times() -> StatCpuTimes:
        head = read_head(path, 512)
        fields = head[: head.index(b"\n")].split()
        if fields[0] != b"cpu":
            raise ValueError("no cpu line")
        v = [int(f) / ticks for f in fields[1:9]]
        if len(v) < 7:
            raise ValueError("short cpu line")
        return StatCpuTimes(*v, *[0.0] * (8 - len(v)))

    return cpu_times


_BUSY = ("user", "nice", "system", "irq", "softirq")
# Known to step back a little: idle and iowait on tickless kernels (NO_HZ idle accounting),
# steal on some hypervisors. A field that went back adds nothing that cycle instead of voiding it.
_STEPPING = ("steal", "idle", "iowait")


def _percent(part: float, whole: float) -> float:
    return min(100.0, max(0.0, part / whole * 100.0))


class CpuCollector:
    """cpu_usage/iowait/steal_percent, cpu_count, load1/5/15, load1_per_cpu, uptime_seconds.

    Busy time is everything but idle and iowait (as psutil counts it); guest time is already
    inside user/nice, so it is not added again. CPU times are read from the first line of
    /proc/stat each cycle; the CPU count (a sysfs read inside sysconf) is re-read every
    ``CPU_COUNT_REFRESH_SECONDS`` of ``now`` and the boot time once.
    """

    name = "cpu"

    def __init__(
        self,
        *,
        cpu_times: Callable[[], CpuTimes] | None = None,
        cpu_count: Callable[[], int | None] = psutil.cpu_count,
        getloadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
        boot_time: Callable[[], float] = psutil.boot_time,
        clock: Callable[[], float] = time.time,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self._cpu_times: Callable[[], CpuTimes] = cpu_times or stat_cpu_times(proc_root)
        self._cpu_count = cpu_count
        self._count: int | None = None
        self._count_at: float | None = None
        self._getloadavg = getloadavg
        self._boot_time = boot_time
        self._clock = clock
        self._boot: float | None = None
        self._deltas: CounterDeltas[str] = CounterDeltas()
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        out: list[Sample] = []
        problems: list[str] = []
        try:
            self._times(now, out)
        except SOURCE_ERRORS as exc:
            self._deltas.reset()
            problems.append(f"CPU times unreadable ({describe(exc)})")
        count = self._count
        at = self._count_at
        if at is None or not 0 <= now - at < CPU_COUNT_REFRESH_SECONDS:
            try:
                count = self._count = self._cpu_count()
                self._count_at = now
            except SOURCE_ERRORS as exc:
                count = self._count = self._count_at = None
                problems.append(f"CPU count unreadable ({describe(exc)})")
        if count:
            out.append(Sample("cpu_count", float(count)))
        try:
            load1, load5, load15 = self._getloadavg()
        except SOURCE_ERRORS as exc:
            problems.append(f"load average unreadable ({describe(exc)})")
        else:
            out += [Sample("load1", load1), Sample("load5", load5), Sample("load15", load15)]
            if count:
                out.append(Sample("load1_per_cpu", load1 / count))
        try:
            if self._boot is None:
                self._boot = self._boot_time()
            out.append(Sample("uptime_seconds", max(0.0, self._clock() - self._boot)))
        except SOURCE_ERRORS as exc:
            problems.append(f"boot time unreadable ({describe(exc)})")
        if len(problems) == 4:  # every part failed
            raise SourceUnavailable("; ".join(problems))
        self._problems = tuple(problems)
        return out

    def _times(self, now: float, out: list[Sample]) -> None:
        t = self._cpu_times()
        reading = {field: getattr(t, field) for field in _BUSY + _STEPPING}
        result = self._deltas.update(now, reading)
        if result is None:
            return
        _, d = result
        if any(field not in d for field in _BUSY):  # a busy counter went back: a reset
            return
        busy = sum(d[field] for field in _BUSY) + d.get("steal", 0.0)
        whole = busy + d.get("idle", 0.0) + d.get("iowait", 0.0)
        if whole <= 0.0:  # no CPU time passed
            return
        out.append(Sample("cpu_usage_percent", _percent(busy, whole)))
        if "iowait" in d:
            out.append(Sample("cpu_iowait_percent", _percent(d["iowait"], whole)))
        if "steal" in d:
            out.append(Sample("cpu_steal_percent", _percent(d["steal"], whole)))
