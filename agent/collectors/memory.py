"""Memory and swap (psutil), OOM kills (/proc/vmstat) and pressure stall information (PSI)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import psutil

from agent.collectors.sources import SOURCE_ERRORS, describe, read_text, why
from agent.samples import Sample, SourceUnavailable, labels

PSI_RESOURCES = ("cpu", "memory", "io")


class VirtualMemory(Protocol):
    @property
    def total(self) -> int: ...
    @property
    def available(self) -> int: ...


class SwapMemory(Protocol):
    @property
    def percent(self) -> float: ...


def parse_psi(text: str) -> dict[str, float]:
    """``{"some": avg10, "full": avg10}`` from a /proc/pressure/<resource> file."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        for field in rest.split():
            if field.startswith("avg10="):
                out[kind] = float(field[6:])
                break
    return out


def find_vmstat(text: str, field: str) -> int | None:
    """The value of one ``name value`` line of /proc/vmstat, or None if the kernel lacks it."""
    key = field + " "
    if text.startswith(key):
        start = len(key)
    else:
        pos = text.find("\n" + key)
        if pos < 0:
            return None
        start = pos + 1 + len(key)
    end = text.find("\n", start)
    return int(text[start:] if end < 0 else text[start:end])


class MemoryCollector:
    """memory_available_percent/bytes, memory_total_bytes, swap_used_percent, oom_kills,
    pressure_some_avg10{resource}, pressure_full_avg10{resource}."""

    name = "memory"

    def __init__(
        self,
        *,
        virtual_memory: Callable[[], VirtualMemory] = psutil.virtual_memory,
        swap_memory: Callable[[], SwapMemory] = psutil.swap_memory,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self._virtual_memory = virtual_memory
        self._swap_memory = swap_memory
        self._vmstat = proc_root / "vmstat"
        self._pressure = [(r, proc_root / "pressure" / r) for r in PSI_RESOURCES]
        self._prev_oom: int | None = None
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        out: list[Sample] = []
        problems: list[str] = []
        try:
            vm = self._virtual_memory()
        except SOURCE_ERRORS as exc:
            raise SourceUnavailable(f"memory figures unreadable ({describe(exc)})") from None
        if vm.total > 0:
            out.append(Sample("memory_total_bytes", float(vm.total)))
            out.append(Sample("memory_available_bytes", float(vm.available)))
            out.append(Sample("memory_available_percent", vm.available / vm.total * 100.0))
        try:
            out.append(Sample("swap_used_percent", float(self._swap_memory().percent)))
        except SOURCE_ERRORS as exc:
            problems.append(f"swap figures unreadable ({describe(exc)})")
        self._oom_kills(out, problems)
        self._psi(out, problems)
        self._problems = tuple(problems)
        return out

    def _oom_kills(self, out: list[Sample], problems: list[str]) -> None:
        try:
            value = find_vmstat(read_text(self._vmstat), "oom_kill")
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
        for resource, path in self._pressure:
            try:
                avg10 = parse_psi(read_text(path))
            except SOURCE_ERRORS as exc:
                failures.append(why(path, exc))
                continue
            res = labels(resource=resource)
            if "some" in avg10:
                out.append(Sample("pressure_some_avg10", avg10["some"], res))
            if "full" in avg10:
                out.append(Sample("pressure_full_avg10", avg10["full"], res))
        if len(failures) == len(self._pressure) and all(f.endswith(" missing") for f in failures):
            problems.append("pressure stall information not available (kernel without PSI)")
        elif failures:
            problems.append("pressure stall information unreadable: " + ", ".join(failures))
