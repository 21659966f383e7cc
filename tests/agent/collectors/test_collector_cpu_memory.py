from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, NoReturn

import psutil
import pytest

from agent.collectors.cpu import (
    CPU_COUNT_REFRESH_SECONDS,
    CpuCollector,
    StatCpuTimes,
    stat_cpu_times,
)
from agent.collectors.memory import MemoryCollector, find_field, find_vmstat, parse_psi
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
    assert got["cpu_usage_percent"] == pytest.approx(100 * 90 / 201)  # the -1 adds nothing


def test_cpu_idle_and_steal_stepping_back_keep_the_usage() -> None:
    # idle -10 and steal -5 (tickless idle accounting, a hypervisor's steal clock): the total
    # went down, yet user and system moved, so the cycle still has a usage figure.
    back = T0._replace(user=160, system=70, idle=790, steal=25)
    c = cpu(sequence(T0, back))
    c.collect(1.0)
    got = plain(c.collect(2.0))
    assert "cpu_steal_percent" not in got
    assert got["cpu_usage_percent"] == pytest.approx(100 * 80 / 80)
    assert 0 <= got["cpu_iowait_percent"] <= 100


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


def test_cpu_times_from_proc_stat_first_line(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    t = stat_cpu_times(PROC)()
    assert t == StatCpuTimes(*(v / ticks for v in (10000, 200, 3000, 80000, 500, 0, 100, 400)))
    proc = copy_tree(tmp_path, "proc")
    (proc / "stat").write_text("intr 1 2\n")
    with pytest.raises(ValueError, match="no cpu line"):
        stat_cpu_times(proc)()
    (proc / "stat").write_text("cpu  1 2 3 4 5 6 7\n")  # before steal time (2.6.11)
    assert stat_cpu_times(proc)().steal == 0.0


def test_cpu_default_source_reads_proc_root(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    c = CpuCollector(proc_root=proc, cpu_count=lambda: 2)
    assert "cpu_usage_percent" not in plain(c.collect(1.0))
    # +1000 user, +100 iowait, +900 idle: 2000 ticks
    (proc / "stat").write_text("cpu  11000 200 3000 80900 600 0 100 400 0 0\n")
    got = plain(c.collect(2.0))
    assert got["cpu_usage_percent"] == pytest.approx(50.0)
    assert got["cpu_iowait_percent"] == pytest.approx(5.0)
    assert got["cpu_steal_percent"] == 0.0
    (proc / "stat").unlink()
    assert "cpu_usage_percent" not in plain(c.collect(3.0))
    assert c.problems() == ("CPU times unreadable (missing)",)


def test_cpu_count_cached_until_its_refresh() -> None:
    counts = iter([4, 8, 8])
    c = cpu(sequence(T0, T1, T1, T1), cpu_count=lambda: next(counts))
    assert plain(c.collect(10.0))["cpu_count"] == 4.0
    assert plain(c.collect(10.0 + CPU_COUNT_REFRESH_SECONDS - 1))["cpu_count"] == 4.0
    got = plain(c.collect(10.0 + CPU_COUNT_REFRESH_SECONDS))
    assert (got["cpu_count"], got["load1_per_cpu"]) == (8.0, 0.25)
    assert plain(c.collect(5.0))["cpu_count"] == 8.0  # the clock went back: read again


def test_cpu_count_failure_is_retried_next_cycle() -> None:
    results: list[Callable[[], int | None]] = [fail(OSError(5, "I/O error")), lambda: 4]
    c = cpu(sequence(T0, T1), cpu_count=lambda: results.pop(0)())
    assert "cpu_count" not in plain(c.collect(1.0))
    assert c.problems() == ("CPU count unreadable (I/O error)",)
    assert plain(c.collect(2.0))["cpu_count"] == 4.0
    assert c.problems() == ()


def memory(proc: Path = PROC) -> MemoryCollector:
    return MemoryCollector(proc_root=proc)


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


def test_memory_unreadable_is_unavailable(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    (proc / "meminfo").unlink()
    with pytest.raises(SourceUnavailable) as info:
        memory(proc).collect(1.0)
    assert str(info.value) == f"memory figures unreadable: {proc}/meminfo missing"
    (proc / "meminfo").write_text("MemFree: 1 kB\n")
    with pytest.raises(SourceUnavailable) as info:
        memory(proc).collect(1.0)
    assert str(info.value) == f"memory figures unreadable: {proc}/meminfo unexpected content"


def test_swap_absent_is_partial(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    meminfo = proc / "meminfo"
    lines = meminfo.read_text().splitlines(keepends=True)
    meminfo.write_text("".join(line for line in lines if not line.startswith("Swap")))
    m = memory(proc)
    got = plain(m.collect(1.0))
    assert "swap_used_percent" not in got
    assert got["memory_available_percent"] == 25.0
    assert m.problems() == (f"swap figures absent (no SwapTotal/SwapFree in {proc}/meminfo)",)


def test_no_swap_is_zero(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    meminfo = proc / "meminfo"
    text = meminfo.read_text()
    text = text.replace("SwapTotal:       2097152", "SwapTotal:             0")
    meminfo.write_text(text.replace("SwapFree:        1835008", "SwapFree:              0"))
    assert plain(memory(proc).collect(1.0))["swap_used_percent"] == 0.0


def test_swap_percent_rounded_like_psutil(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    meminfo = proc / "meminfo"
    meminfo.write_text(meminfo.read_text().replace("1835008", "1835000"))  # 12.50038...%
    assert plain(memory(proc).collect(1.0))["swap_used_percent"] == 12.5


def without(text: str, *fields: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith(fields))


def test_available_estimated_like_psutil_without_memavailable(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    meminfo = proc / "meminfo"
    original = meminfo.read_text()
    meminfo.write_text(without(original, "MemAvailable:"))
    # Two zones with low watermarks of 1000 and 24 pages: 4 MiB in all.
    (proc / "zoneinfo").write_text(
        "Node 0, zone      DMA\n  pages free     100\n        low      1000\n"
        "Node 0, zone   Normal\n  pages free     200\n        low      24\n"
    )
    page = os.sysconf("SC_PAGE_SIZE")
    watermark = 1024 * page
    free, active_file, inactive_file, slab = 524288 << 10, 524288 << 10, 1310720 << 10, 196608 << 10
    pagecache = active_file + inactive_file
    expected = int(
        free
        - watermark
        + pagecache
        - min(pagecache / 2, watermark)
        + slab
        - min(slab / 2.0, watermark)
    )
    got = plain(memory(proc).collect(1.0))
    assert got["memory_available_bytes"] == float(expected)
    assert got["memory_total_bytes"] == float(8 << 30)
    # MemAvailable 0 (a kernel bug psutil works around) is estimated the same way.
    meminfo.write_text(original.replace("MemAvailable:    2097152", "MemAvailable:          0"))
    assert plain(memory(proc).collect(1.0))["memory_available_bytes"] == float(expected)
    # Without the LRU figures (or without zoneinfo): free + cached.
    meminfo.write_text(without(original, "MemAvailable:", "Active(file):"))
    assert plain(memory(proc).collect(1.0))["memory_available_bytes"] == float(
        (524288 + 1310720) << 10
    )
    meminfo.write_text(without(original, "MemAvailable:"))
    (proc / "zoneinfo").unlink()
    assert plain(memory(proc).collect(1.0))["memory_available_bytes"] == float(
        (524288 + 1310720) << 10
    )


def test_available_above_total_is_free_as_psutil(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    meminfo = proc / "meminfo"
    meminfo.write_text(
        meminfo.read_text().replace("MemAvailable:    2097152", "MemAvailable: 9999999")
    )
    assert plain(memory(proc).collect(1.0))["memory_available_bytes"] == float(524288 << 10)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads the real /proc")
def test_memory_matches_psutil_on_this_machine() -> None:
    # Memory moves while a busy neighbour (the other test worker) runs: read psutil on both
    # sides of the collector until both agree (then it must be exactly that), else it must
    # lie between them.
    for _ in range(50):
        before = psutil.virtual_memory()
        got = plain(MemoryCollector().collect(1.0))
        after = psutil.virtual_memory()
        swap = psutil.swap_memory()
        if before.available == after.available:
            break
    assert got["memory_total_bytes"] == before.total
    low, high = sorted((before.available, after.available))
    assert low <= got["memory_available_bytes"] <= high
    assert got["swap_used_percent"] == swap.percent


def test_parsers() -> None:
    assert find_vmstat(b"oom_kill 7\nx 1", "oom_kill") == 7
    assert find_vmstat(b"a 1\noom_kill 8", "oom_kill") == 8
    assert find_vmstat(b"a 1\noom_kill_x 8\n", "oom_kill") is None
    assert parse_psi(b"some avg10=0.10 avg60=0 avg300=0 total=0\n") == {"some": 0.1}
    assert find_field(b"MemTotal:  16 kB\nSwapTotal: 0 kB\n", b"SwapTotal:") == 0
    assert find_field(b"SwapCached:  16 kB\n", b"Cached:") is None
