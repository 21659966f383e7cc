from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, NoReturn

import psutil
import pytest

from agent.collectors.cpu import CpuCollector
from agent.collectors.memory import MemoryCollector, find_vmstat, parse_psi
from agent.samples import SourceUnavailable

from .collector_testkit import PROC, assert_valid, by_label, copy_tree, plain


class Times(NamedTuple):
    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float


class Vm(NamedTuple):
    total: int
    available: int


class Swap(NamedTuple):
    percent: float


def sequence(*readings: Times) -> Callable[[], Times]:
    it: Iterator[Times] = iter(readings)
    return lambda: next(it)


def fail(exc: Exception) -> Callable[[], NoReturn]:
    def raise_it() -> NoReturn:
        raise exc

    return raise_it


def cpu(
    times: Callable[[], Times],
    cpu_count: Callable[[], int | None] = lambda: 4,
    getloadavg: Callable[[], tuple[float, float, float]] = lambda: (2.0, 1.5, 1.0),
) -> CpuCollector:
    return CpuCollector(
        cpu_times=times,
        cpu_count=cpu_count,
        getloadavg=getloadavg,
        boot_time=lambda: 1_000_000.0,
        clock=lambda: 1_003_600.0,
    )


T0 = Times(100, 0, 50, 800, 20, 0, 0, 30)
# +60 user, +20 system, +100 idle, +10 iowait, +10 steal: 200 s of CPU time in all
T1 = Times(160, 0, 70, 900, 30, 0, 0, 40)


def test_cpu_first_cycle_has_no_rates_then_exact_percentages() -> None:
    c = cpu(sequence(T0, T1))
    first = plain(c.collect(10.0))
    assert first == {
        "cpu_count": 4.0,
        "load1": 2.0,
        "load5": 1.5,
        "load15": 1.0,
        "load1_per_cpu": 0.5,
        "uptime_seconds": 3600.0,
    }
    second = c.collect(11.0)
    assert_valid(second)
    got = plain(second)
    assert got["cpu_usage_percent"] == pytest.approx(45.0)  # (60 + 20 + 10) / 200
    assert got["cpu_iowait_percent"] == pytest.approx(5.0)
    assert got["cpu_steal_percent"] == pytest.approx(5.0)


def test_cpu_counter_reset_gives_no_rate_not_a_negative() -> None:
    c = cpu(sequence(T1, T0, T1))
    c.collect(1.0)
    after_reset = plain(c.collect(2.0))
    assert "cpu_usage_percent" not in after_reset
    assert all(v >= 0 for v in after_reset.values())
    assert plain(c.collect(3.0))["cpu_usage_percent"] == pytest.approx(45.0)


def test_cpu_iowait_stepping_back_drops_only_iowait() -> None:
    back = T1._replace(iowait=19, idle=911)
    c = cpu(sequence(T0, back))
    c.collect(1.0)
    got = plain(c.collect(2.0))
    assert "cpu_iowait_percent" not in got
    assert got["cpu_usage_percent"] == pytest.approx(45.0)


def test_cpu_partial_sources() -> None:
    c = cpu(
        fail(PermissionError()),
        cpu_count=lambda: None,
        getloadavg=fail(psutil.AccessDenied()),
    )
    assert plain(c.collect(1.0)) == {"uptime_seconds": 3600.0}
    assert c.problems() == (
        "CPU times unreadable (permission denied)",
        "load average unreadable (permission denied)",
    )


def test_cpu_all_sources_unreadable_is_unavailable() -> None:
    c = CpuCollector(
        cpu_times=fail(FileNotFoundError()),
        cpu_count=fail(OSError()),
        getloadavg=fail(OSError()),
        boot_time=fail(psutil.AccessDenied()),
    )
    with pytest.raises(SourceUnavailable, match="CPU times unreadable"):
        c.collect(1.0)


def memory(
    proc: Path = PROC,
    virtual_memory: Callable[[], Vm] = lambda: Vm(8 << 30, 2 << 30),
    swap_memory: Callable[[], Swap] = lambda: Swap(12.5),
) -> MemoryCollector:
    return MemoryCollector(virtual_memory=virtual_memory, swap_memory=swap_memory, proc_root=proc)


def test_memory_exact_values_and_psi() -> None:
    samples = memory().collect(1.0)
    assert_valid(samples)
    assert plain(samples) == {
        "memory_total_bytes": float(8 << 30),
        "memory_available_bytes": float(2 << 30),
        "memory_available_percent": 25.0,
        "swap_used_percent": 12.5,
    }
    assert by_label(samples, "pressure_some_avg10", "resource") == {
        "cpu": 1.5,
        "memory": 2.25,
        "io": 12.0,
    }
    assert by_label(samples, "pressure_full_avg10", "resource") == {
        "cpu": 0.0,
        "memory": 0.75,
        "io": 10.5,
    }


def test_oom_kills_is_the_increase_since_last_cycle(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    m = memory(proc)
    assert "oom_kills" not in plain(m.collect(1.0))  # first cycle: nothing to compare
    vmstat = proc / "vmstat"
    vmstat.write_text(vmstat.read_text().replace("oom_kill 3", "oom_kill 5"))
    assert plain(m.collect(2.0))["oom_kills"] == 2.0
    assert plain(m.collect(3.0))["oom_kills"] == 0.0
    vmstat.write_text(vmstat.read_text().replace("oom_kill 5", "oom_kill 1"))  # reset
    assert "oom_kills" not in plain(m.collect(4.0))
    assert m.problems() == ()


def test_old_kernel_without_psi_cpu_full_or_oom_kill(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    (proc / "pressure" / "cpu").write_text("some avg10=3.00 avg60=0.00 avg300=0.00 total=1\n")
    (proc / "vmstat").write_text("nr_free_pages 1\npgfault 2\n")
    m = memory(proc)
    samples = m.collect(1.0)
    assert "oom_kills" not in plain(samples)
    assert by_label(samples, "pressure_full_avg10", "resource") == {"memory": 0.75, "io": 10.5}
    assert by_label(samples, "pressure_some_avg10", "resource")["cpu"] == 3.0
    assert m.problems() == (
        f"OOM kill counter absent (no oom_kill in {proc}/vmstat; kernel before 4.13)",
    )
    for name in ("cpu", "memory", "io"):
        (proc / "pressure" / name).unlink()
    samples = m.collect(2.0)
    assert not [s for s in samples if s.metric.startswith("pressure")]
    assert "pressure stall information not available (kernel without PSI)" in m.problems()


def test_memory_unreadable_is_unavailable() -> None:
    m = memory(virtual_memory=fail(psutil.AccessDenied()))
    with pytest.raises(SourceUnavailable, match=r"memory figures unreadable \(permission denied\)"):
        m.collect(1.0)


def test_swap_unreadable_is_partial() -> None:
    m = memory(swap_memory=fail(PermissionError()))
    assert "swap_used_percent" not in plain(m.collect(1.0))
    assert m.problems() == ("swap figures unreadable (permission denied)",)


def test_parsers() -> None:
    assert find_vmstat("oom_kill 7\nx 1", "oom_kill") == 7
    assert find_vmstat("a 1\noom_kill 8", "oom_kill") == 8
    assert find_vmstat("a 1\noom_kill_x 8\n", "oom_kill") is None
    assert parse_psi("some avg10=0.10 avg60=0 avg300=0 total=0\n") == {"some": 0.1}
