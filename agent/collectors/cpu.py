"""CPU use from deltas of the kernel's CPU times, load averages, CPU count and uptime."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

import psutil

from agent.collectors.counters import CounterDeltas
from agent.collectors.sources import SOURCE_ERRORS, describe
from agent.samples import Sample, SourceUnavailable


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


def _percent(part: float, whole: float) -> float:
    return min(100.0, max(0.0, part / whole * 100.0))


class CpuCollector:
    """cpu_usage/iowait/steal_percent, cpu_count, load1/5/15, load1_per_cpu, uptime_seconds.

    Busy time is everything but idle and iowait (as psutil counts it); guest time is already
    inside user/nice, so it is not added again.
    """

    name = "cpu"

    def __init__(
        self,
        *,
        cpu_times: Callable[[], CpuTimes] = psutil.cpu_times,
        cpu_count: Callable[[], int | None] = psutil.cpu_count,
        getloadavg: Callable[[], tuple[float, float, float]] = psutil.getloadavg,
        boot_time: Callable[[], float] = psutil.boot_time,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cpu_times = cpu_times
        self._cpu_count = cpu_count
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
        count: int | None = None
        try:
            count = self._cpu_count()
        except SOURCE_ERRORS as exc:
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
        idle = t.idle + t.iowait
        total = idle + t.user + t.nice + t.system + t.irq + t.softirq + t.steal
        reading = {"total": total, "busy": total - idle, "iowait": t.iowait, "steal": t.steal}
        result = self._deltas.update(now, reading)
        if result is None:
            return
        _, d = result
        whole, busy = d.get("total", 0.0), d.get("busy")
        if whole <= 0.0 or busy is None:  # no CPU time passed, or the counters went back
            return
        out.append(Sample("cpu_usage_percent", _percent(busy, whole)))
        # iowait is known to step back a little on tickless kernels: then it is left out.
        if "iowait" in d:
            out.append(Sample("cpu_iowait_percent", _percent(d["iowait"], whole)))
        if "steal" in d:
            out.append(Sample("cpu_steal_percent", _percent(d["steal"], whole)))
