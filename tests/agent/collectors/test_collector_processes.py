from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.collectors.processes import RESCAN_SECONDS, ProcessCollector, parse_stat
from agent.samples import Sample, SourceUnavailable

from .collector_testkit import PROC, add_process, assert_valid, by_label, copy_tree, remove_process

PAGE = 4096


def collector(proc: Path, names: list[str] | None = None) -> ProcessCollector:
    return ProcessCollector(
        vpn_processes=names or [], proc_root=proc, clock_ticks=100, page_size=PAGE
    )


def table(samples: Sequence[Sample], metric: str) -> dict[str, float]:
    return by_label(samples, metric, "process")


def test_explicit_list_always_reported() -> None:
    names = ["openvpn", "ocserv", "xl2tpd", "accel-pppd-long-name"]
    samples = list(collector(PROC, names).collect(1.0))
    assert_valid(samples)
    assert table(samples, "vpn_process_up") == {
        "openvpn": 1.0,
        "ocserv": 1.0,  # up, not a process count (the zombie is ignored)
        "xl2tpd": 0.0,
        "accel-pppd-long-name": 1.0,  # comm is cut at 15 characters
    }
    assert table(samples, "vpn_process_rss_bytes") == {
        "openvpn": 2048.0 * PAGE,
        "ocserv": 768.0 * PAGE,
        "accel-pppd-long-name": 100.0 * PAGE,
    }
    assert table(samples, "vpn_process_restarts") == dict.fromkeys(names, 0.0)
    assert table(samples, "vpn_process_cpu_percent") == {}  # first cycle


def test_cpu_percent_from_tick_deltas(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    c = collector(proc, ["openvpn", "ocserv"])
    c.collect(10.0)
    add_process(proc, 812, "openvpn", utime=250, stime=50, start=5000, rss=2048)  # +100 ticks
    add_process(proc, 1000, "ocserv", utime=30, stime=30, start=7000, rss=512)  # +20 ticks
    samples = list(c.collect(12.0))
    assert table(samples, "vpn_process_cpu_percent") == {"openvpn": 50.0, "ocserv": 10.0}


def test_restart_counted_when_all_processes_are_new(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    c = collector(proc, ["openvpn", "ocserv"])
    c.collect(1.0)
    # a new ocserv worker comes and goes: not a restart
    add_process(proc, 1003, "ocserv", start=7300)
    c.collect(2.0)
    remove_process(proc, 1003)
    c.collect(3.0)
    # openvpn dies ...
    remove_process(proc, 812)
    samples = list(c.collect(4.0))
    assert table(samples, "vpn_process_up")["openvpn"] == 0.0
    assert table(samples, "vpn_process_restarts")["openvpn"] == 0.0
    assert "openvpn" not in table(samples, "vpn_process_rss_bytes")
    # ... and comes back as a new process
    add_process(proc, 850, "openvpn", utime=1, start=9000, rss=10)
    samples = list(c.collect(5.0))
    assert table(samples, "vpn_process_up")["openvpn"] == 1.0
    assert table(samples, "vpn_process_restarts") == {"openvpn": 1.0, "ocserv": 0.0}
    assert "openvpn" not in table(samples, "vpn_process_cpu_percent")  # all new: no rate yet
    # ocserv replaced at once (same pids reused, new start times) also counts
    add_process(proc, 1000, "ocserv", start=9100)
    add_process(proc, 1001, "ocserv", start=9101)
    samples = list(c.collect(6.0))
    assert table(samples, "vpn_process_restarts") == {"openvpn": 1.0, "ocserv": 1.0}


def test_auto_reports_known_daemons_once_seen(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    c = collector(proc)
    samples = list(c.collect(1.0))
    assert table(samples, "vpn_process_up") == {"openvpn": 1.0, "charon": 1.0, "ocserv": 1.0}
    remove_process(proc, 900)
    samples = list(c.collect(2.0))
    assert table(samples, "vpn_process_up") == {"openvpn": 1.0, "charon": 0.0, "ocserv": 1.0}


def test_new_process_name_read_while_young_then_cached(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    c = collector(proc, ["openvpn"])
    c.collect(100.0)
    add_process(proc, 1500, "sh", start=20000)
    add_process(proc, 1600, "sh", start=20001)
    base = table(c.collect(101.0), "vpn_process_rss_bytes")["openvpn"]
    add_process(proc, 1500, "openvpn", start=20000, rss=10)  # exec soon after fork: seen at once
    assert table(c.collect(102.0), "vpn_process_rss_bytes") == {"openvpn": base + 10 * PAGE}
    add_process(proc, 1600, "openvpn", start=20001, rss=100)  # exec much later: at the rescan
    assert table(c.collect(110.0), "vpn_process_rss_bytes") == {"openvpn": base + 10 * PAGE}
    assert table(c.collect(130.0), "vpn_process_rss_bytes") == {"openvpn": base + 110 * PAGE}
    assert table(c.collect(131.0), "vpn_process_up") == {"openvpn": 1.0}


def test_unreadable_proc_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match=r"process list unreadable: .* missing"):
        collector(tmp_path / "nothing").collect(1.0)


def test_parse_stat_with_parentheses_in_name() -> None:
    assert parse_stat((PROC / "77" / "stat").read_text()) == ("S", 5, 0, 100)
    assert parse_stat((PROC / "812" / "stat").read_text()) == ("S", 5000, 200, 2048)


def test_pid_gone_then_reused_is_read_afresh(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    c = collector(proc, ["openvpn"])
    c.collect(1.0)
    remove_process(proc, 812)
    assert table(c.collect(2.0), "vpn_process_up") == {"openvpn": 0.0}
    add_process(proc, 812, "sh", start=9000)  # the pid reused by another program
    assert table(c.collect(3.0), "vpn_process_up") == {"openvpn": 0.0}
    add_process(proc, 812, "openvpn", start=9000, rss=7)  # which execs while young
    samples = c.collect(4.0)
    assert table(samples, "vpn_process_up") == {"openvpn": 1.0}
    assert table(samples, "vpn_process_rss_bytes") == {"openvpn": 7.0 * PAGE}
    assert table(samples, "vpn_process_restarts") == {"openvpn": 1.0}


def own_namespace(proc: Path, nspid: str, last_pid: int) -> None:
    """A fake /proc/self/status (pid namespaces) and /proc/loadavg (the last pid handed out)."""
    (proc / "self").mkdir()
    (proc / "self" / "status").write_text(f"Name:\tpython\nPid:\t{nspid}\nNSpid:\t{nspid}\n")
    set_last_pid(proc, last_pid)


def set_last_pid(proc: Path, last_pid: int) -> None:
    (proc / "loadavg").write_text(f"0.10 0.20 0.30 1/120 {last_pid}\n")


def test_listing_skipped_while_no_pid_was_handed_out(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    own_namespace(proc, str(os.getpid()), 1300)
    c = collector(proc, ["openvpn"])
    base = table(c.collect(1.0), "vpn_process_rss_bytes")["openvpn"]
    add_process(proc, 1500, "openvpn", start=20000, rss=10)  # not possible without a new pid
    assert table(c.collect(2.0), "vpn_process_rss_bytes") == {"openvpn": base}
    set_last_pid(proc, 1500)
    assert table(c.collect(3.0), "vpn_process_rss_bytes") == {"openvpn": base + 10 * PAGE}
    remove_process(proc, 812)  # an exit hands out no pid: seen from its stat file
    assert table(c.collect(4.0), "vpn_process_rss_bytes") == {"openvpn": 10 * PAGE}
    remove_process(proc, 1500)
    samples = c.collect(5.0)
    assert table(samples, "vpn_process_up") == {"openvpn": 0.0}
    add_process(proc, 1600, "openvpn", start=20100)
    assert table(c.collect(6.0), "vpn_process_up") == {"openvpn": 0.0}
    assert table(c.collect(1.0 + RESCAN_SECONDS), "vpn_process_up") == {"openvpn": 1.0}


def test_listing_every_cycle_when_proc_is_another_namespace(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    own_namespace(proc, f"{os.getpid()}\t7", 1300)  # this process is in a child namespace
    c = collector(proc, ["openvpn"])
    base = table(c.collect(1.0), "vpn_process_rss_bytes")["openvpn"]
    add_process(proc, 1500, "openvpn", start=20000, rss=10)
    assert table(c.collect(2.0), "vpn_process_rss_bytes") == {"openvpn": base + 10 * PAGE}
