from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors.netstack import (
    CONNTRACK_MAX_REFRESH_SECONDS,
    FORWARDING_REFRESH_SECONDS,
    ConntrackCollector,
    ForwardingCollector,
    UdpCollector,
    parse_snmp6_udp,
    parse_snmp_udp,
)
from agent.samples import SourceUnavailable

from .collector_testkit import PROC, assert_valid, by_label, copy_tree, plain

SNMP_UDP = (
    "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n"
    "Udp: 50000 12 {inerr} 48000 {rcv} {snd} 0\n"
    "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors\n"
    "UdpLite: 0 0 999 0 999 999 0\n"
)


def set_udp(proc: Path, inerr: int, rcv: int, snd: int) -> None:
    (proc / "net" / "snmp").write_text(SNMP_UDP.format(inerr=inerr, rcv=rcv, snd=snd))


def set_udp6(proc: Path, inerr: int, rcv: int, snd: int) -> None:
    (proc / "net" / "snmp6").write_text(
        f"Udp6InErrors {inerr}\nUdp6RcvbufErrors {rcv}\nUdp6SndbufErrors {snd}\n"
        "UdpLite6InErrors 5\n"
    )


def test_udp_error_rates_v4_plus_v6(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")  # v4: 30 in, 20 rcvbuf, 5 sndbuf; v6: 7, 4, 1
    u = UdpCollector(proc_root=proc)
    assert u.collect(1.0) == []
    set_udp(proc, inerr=50, rcv=36, snd=5)
    set_udp6(proc, inerr=11, rcv=8, snd=3)
    samples = u.collect(3.0)
    assert_valid(samples)
    assert plain(samples) == {
        "udp_in_errors_per_second": 12.0,  # (20 + 4) / 2
        "udp_rcvbuf_errors_per_second": 10.0,  # (16 + 4) / 2
        "udp_sndbuf_errors_per_second": 1.0,  # (0 + 2) / 2
    }


def test_udp_counter_reset_and_no_ipv6(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    (proc / "net" / "snmp6").unlink()
    u = UdpCollector(proc_root=proc)
    u.collect(1.0)
    set_udp(proc, inerr=1, rcv=1, snd=6)  # in and rcvbuf went back: reset
    assert plain(u.collect(2.0)) == {"udp_sndbuf_errors_per_second": 1.0}
    assert u.problems() == ()
    set_udp(proc, inerr=3, rcv=2, snd=6)
    assert plain(u.collect(3.0)) == {
        "udp_in_errors_per_second": 2.0,
        "udp_rcvbuf_errors_per_second": 1.0,
        "udp_sndbuf_errors_per_second": 0.0,
    }


def test_udp_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match=r"UDP counters unreadable: .*/net/snmp missing"):
        UdpCollector(proc_root=tmp_path).collect(1.0)


def test_snmp6_parser_takes_whole_names_only() -> None:
    text = b"Udp6InErrorsX 9\nUdpLite6InErrors 8\nUdp6InErrors  \t 7\nUdp6RcvbufErrors 4"
    assert parse_snmp6_udp(text) == {"InErrors": 7, "RcvbufErrors": 4}
    assert parse_snmp6_udp(b"Udp6SndbufErrors 3\n") == {"SndbufErrors": 3}


def test_snmp_parser_ignores_udplite() -> None:
    got = parse_snmp_udp((PROC / "net" / "snmp").read_bytes())
    assert (got["InErrors"], got["RcvbufErrors"], got["SndbufErrors"]) == (30, 20, 5)


def test_conntrack_exact() -> None:
    samples = ConntrackCollector(proc_root=PROC).collect(1.0)
    assert_valid(samples)
    assert plain(samples) == {
        "conntrack_entries": 1234.0,
        "conntrack_max": 262144.0,
        "conntrack_used_percent": 1234 / 262144 * 100,
    }


def test_conntrack_count_every_cycle_max_cached_until_its_refresh(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    netfilter = proc / "sys" / "net" / "netfilter"
    c = ConntrackCollector(proc_root=proc)
    c.collect(50.0)
    (netfilter / "nf_conntrack_count").write_text("2000\n")
    (netfilter / "nf_conntrack_max").write_text("4000\n")
    later = 50.0 + CONNTRACK_MAX_REFRESH_SECONDS
    assert plain(c.collect(later - 1.0)) == {
        "conntrack_entries": 2000.0,
        "conntrack_max": 262144.0,
        "conntrack_used_percent": 2000 / 262144 * 100,
    }
    assert plain(c.collect(later)) == {
        "conntrack_entries": 2000.0,
        "conntrack_max": 4000.0,
        "conntrack_used_percent": 50.0,
    }


def test_conntrack_max_reread_after_a_failure(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    netfilter = proc / "sys" / "net" / "netfilter"
    c = ConntrackCollector(proc_root=proc)
    c.collect(1.0)
    (netfilter / "nf_conntrack_count").unlink()  # module unloaded ...
    with pytest.raises(SourceUnavailable, match="conntrack module not loaded"):
        c.collect(2.0)
    (netfilter / "nf_conntrack_count").write_text("10\n")  # ... and loaded with another size
    (netfilter / "nf_conntrack_max").write_text("1000\n")
    assert plain(c.collect(3.0))["conntrack_used_percent"] == 1.0


def test_conntrack_module_not_loaded(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable) as info:
        ConntrackCollector(proc_root=tmp_path).collect(1.0)
    assert str(info.value) == (
        f"conntrack module not loaded ({tmp_path}/sys/net/netfilter/nf_conntrack_count missing)"
    )


def test_forwarding() -> None:
    f = ForwardingCollector(proc_root=PROC)
    samples = f.collect(1.0)
    assert_valid(samples)
    assert by_label(samples, "ip_forwarding", "family") == {"ipv4": 1.0, "ipv6": 0.0}


def test_forwarding_without_ipv6_and_without_anything(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    (proc / "sys" / "net" / "ipv6" / "conf" / "all" / "forwarding").unlink()
    f = ForwardingCollector(proc_root=proc)
    assert by_label(f.collect(1.0), "ip_forwarding", "family") == {"ipv4": 1.0}
    assert f.problems() == ()
    (proc / "sys" / "net" / "ipv4" / "ip_forward").unlink()
    with pytest.raises(SourceUnavailable, match=r"IP forwarding settings unreadable: .*missing"):
        f.collect(1.0 + FORWARDING_REFRESH_SECONDS)


def test_forwarding_cached_until_its_refresh(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    f = ForwardingCollector(proc_root=proc)
    assert by_label(f.collect(100.0), "ip_forwarding", "family") == {"ipv4": 1.0, "ipv6": 0.0}
    (proc / "sys" / "net" / "ipv4" / "ip_forward").write_text("0\n")
    later = 100.0 + FORWARDING_REFRESH_SECONDS
    assert by_label(f.collect(later - 0.5), "ip_forwarding", "family")["ipv4"] == 1.0
    assert by_label(f.collect(later), "ip_forwarding", "family")["ipv4"] == 0.0
    (proc / "sys" / "net" / "ipv4" / "ip_forward").write_text("1\n")
    assert by_label(f.collect(later - 1.0), "ip_forwarding", "family")["ipv4"] == 1.0  # clock back


def test_forwarding_unreadable_is_retried_every_cycle(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    forward = proc / "sys" / "net" / "ipv4" / "ip_forward"
    (proc / "sys" / "net" / "ipv6" / "conf" / "all" / "forwarding").unlink()
    saved = forward.read_text()
    forward.unlink()
    f = ForwardingCollector(proc_root=proc)
    with pytest.raises(SourceUnavailable):
        f.collect(1.0)
    forward.write_text(saved)
    assert by_label(f.collect(2.0), "ip_forwarding", "family") == {"ipv4": 1.0}
