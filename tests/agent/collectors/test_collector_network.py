from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors.network import LINK_REFRESH_SECONDS, NetworkCollector
from agent.samples import Sample, SourceUnavailable, labels

from .collector_testkit import PROC, SYS, assert_valid, by_label, copy_tree, net_dev, values

SECOND = {
    "lo": (9000, 0, 0, 9000, 0, 0),
    "eth0": (101_000_000, 4, 1, 22_000_000, 2, 5),
    "ens5": (0, 0, 0, 0, 0, 0),
    "tun0": (300_000, 0, 0, 400_000, 0, 0),
    "wg0": (50_000, 0, 0, 60_000, 0, 0),
    "docker0": (8000, 0, 0, 8000, 0, 0),
    "bond0": (1, 0, 0, 1, 0, 0),
    "vpns0": (11_000, 0, 0, 22_000, 0, 0),  # +1000 rx, +2000 tx
    # vpns1 ended; vpns2 started (counted as a peer, no traffic delta yet)
    "vpns2": (70_000, 0, 0, 80_000, 0, 0),
    "ppp0": (5_500, 1, 0, 6_600, 1, 0),  # +500 rx, +600 tx, +2 errors
}


def interfaces(samples: list[Sample]) -> set[str]:
    return {v for s in samples for k, v in s.labels if k == "interface"}


def test_first_cycle_state_and_which_interfaces() -> None:
    n = NetworkCollector(vpn_interfaces=["tun9"], proc_root=PROC, sys_root=SYS)
    samples = list(n.collect(1.0))
    assert_valid(samples)
    assert by_label(samples, "net_up", "interface") == {
        "eth0": 1.0,
        "ens5": 0.0,  # physical, link down
        "tun0": 1.0,  # operstate "unknown" with IFF_UP: up
        "wg0": 1.0,
        "tun9": 0.0,  # configured but missing: net_up 0 only
    }
    assert by_label(samples, "net_mtu", "interface") == {
        "eth0": 1500.0,
        "ens5": 1500.0,
        "tun0": 1500.0,
        "wg0": 1420.0,
    }
    assert not [s for s in samples if s.metric.endswith("_per_second")]
    assert values(samples)[("vpn_active_peers", labels(source="sessions"))] == 3.0
    assert interfaces(samples) == {"eth0", "ens5", "tun0", "wg0", "tun9"}
    assert n.problems() == ()


def test_rates_and_session_sums(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    n = NetworkCollector(vpn_interfaces=["tun9"], proc_root=proc, sys_root=SYS)
    n.collect(10.0)
    (proc / "net" / "dev").write_text(net_dev(SECOND))
    samples = list(n.collect(12.0))
    assert_valid(samples)
    v = values(samples)

    def get(metric: str, iface: str) -> float:
        return v[(metric, labels(interface=iface))]

    # eth0: +100 MB rx and +20 MB tx in 2 s; 1000 Mbit/s link
    assert get("net_rx_bytes_per_second", "eth0") == 50_000_000.0
    assert get("net_tx_bytes_per_second", "eth0") == 10_000_000.0
    assert get("net_errors_per_second", "eth0") == 2.0  # 2+0 -> 4+2 (in + out)
    assert get("net_drops_per_second", "eth0") == 1.0  # 1+3 -> 1+5
    assert get("net_link_utilization_percent", "eth0") == pytest.approx(40.0)
    assert get("net_rx_bytes_per_second", "tun0") == 0.0
    assert ("net_link_utilization_percent", labels(interface="tun0")) not in v  # speed unknown
    assert get("net_rx_bytes_per_second", "vpns+") == 500.0
    assert get("net_tx_bytes_per_second", "vpns+") == 1000.0
    assert get("net_errors_per_second", "vpns+") == 0.0
    assert get("net_rx_bytes_per_second", "ppp+") == 250.0
    assert get("net_tx_bytes_per_second", "ppp+") == 300.0
    assert get("net_errors_per_second", "ppp+") == 1.0
    assert v[("vpn_active_peers", labels(source="sessions"))] == 3.0
    # session interfaces are never listed one by one
    assert interfaces(samples) == {"eth0", "ens5", "tun0", "wg0", "tun9", "vpns+", "ppp+"}
    assert "vpns0" not in repr(samples)
    assert "ppp0" not in repr(samples)


def test_counter_reset_gives_no_rate(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    n = NetworkCollector(proc_root=proc, sys_root=SYS)
    n.collect(1.0)
    reset = dict(SECOND, eth0=(10, 0, 0, 10, 0, 0), vpns0=(1, 0, 0, 1, 0, 0))
    (proc / "net" / "dev").write_text(net_dev(reset))
    samples = list(n.collect(2.0))
    assert all(s.value >= 0 for s in samples)
    v = values(samples)
    assert ("net_rx_bytes_per_second", labels(interface="eth0")) not in v
    assert v[("net_up", labels(interface="eth0"))] == 1.0
    assert v[("net_rx_bytes_per_second", labels(interface="vpns+"))] == 0.0  # vpns0 left out


def test_session_prefixes_are_a_parameter() -> None:
    n = NetworkCollector(
        vpn_interfaces=["tun0"],
        session_prefixes=("vpns", "ppp", "tun"),
        proc_root=PROC,
        sys_root=SYS,
    )
    samples = list(n.collect(1.0))
    assert interfaces(samples) == {"eth0", "ens5", "wg0"}
    assert values(samples)[("vpn_active_peers", labels(source="sessions"))] == 4.0
    assert n.problems() == (
        "interface tun0 is configured but is a per-session interface; "
        "it is reported only within its '<prefix>+' sum",
    )


def test_no_session_interface_ever_seen_means_no_session_count(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    (proc / "net" / "dev").write_text(net_dev({"eth0": (1, 0, 0, 1, 0, 0)}))
    n = NetworkCollector(proc_root=proc, sys_root=SYS)
    n.collect(1.0)
    samples = list(n.collect(2.0))
    assert not [s for s in samples if s.metric == "vpn_active_peers"]
    assert interfaces(samples) == {"eth0"}


def test_sessions_all_gone_reports_zero_once_seen(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    n = NetworkCollector(proc_root=proc, sys_root=SYS)
    n.collect(1.0)
    (proc / "net" / "dev").write_text(net_dev({"eth0": (1, 0, 0, 1, 0, 0)}))
    v = values(n.collect(2.0))
    assert v[("vpn_active_peers", labels(source="sessions"))] == 0.0
    assert v[("net_rx_bytes_per_second", labels(interface="vpns+"))] == 0.0


def test_unusable_names_are_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        NetworkCollector(session_prefixes=("bad prefix",))
    with pytest.raises(ValueError, match="interface name"):
        NetworkCollector(vpn_interfaces=["a/b"])


def test_missing_net_dev_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(
        SourceUnavailable, match=r"interface counters unreadable: .*/net/dev missing"
    ):
        NetworkCollector(proc_root=tmp_path, sys_root=SYS).collect(1.0)


def test_mtu_and_speed_cached_until_their_refresh(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    sys_root = copy_tree(tmp_path, "sys")
    eth0 = sys_root / "class" / "net" / "eth0"
    n = NetworkCollector(proc_root=proc, sys_root=sys_root)
    n.collect(100.0)
    (eth0 / "mtu").write_text("9000\n")
    (eth0 / "speed").write_text("10000\n")
    (proc / "net" / "dev").write_text(net_dev(SECOND))
    later = 100.0 + LINK_REFRESH_SECONDS
    v = values(n.collect(later - 1.0))
    assert v[("net_mtu", labels(interface="eth0"))] == 1500.0
    assert v[("net_link_utilization_percent", labels(interface="eth0"))] == pytest.approx(
        100_000_000 / 29.0 * 8 / 1e9 * 100
    )
    v = values(n.collect(later))
    assert v[("net_mtu", labels(interface="eth0"))] == 9000.0
    assert v[("net_link_utilization_percent", labels(interface="eth0"))] == 0.0  # no traffic


def test_link_state_every_cycle_and_a_change_rereads_mtu_and_speed(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    sys_root = copy_tree(tmp_path, "sys")
    eth0 = sys_root / "class" / "net" / "eth0"
    n = NetworkCollector(proc_root=proc, sys_root=sys_root)
    n.collect(1.0)
    (eth0 / "operstate").write_text("down\n")
    (eth0 / "mtu").write_text("1400\n")
    v = values(n.collect(2.0))
    assert v[("net_up", labels(interface="eth0"))] == 0.0
    assert v[("net_mtu", labels(interface="eth0"))] == 1400.0
    (eth0 / "mtu").write_text("1300\n")
    (eth0 / "flags").write_text("0x1002\n")  # administratively down as well
    assert values(n.collect(3.0))[("net_mtu", labels(interface="eth0"))] == 1400.0
    (eth0 / "operstate").write_text("up\n")
    (eth0 / "flags").write_text("0x1003\n")
    v = values(n.collect(4.0))
    assert v[("net_up", labels(interface="eth0"))] == 1.0
    assert v[("net_mtu", labels(interface="eth0"))] == 1300.0


def test_interface_back_after_missing_rereads_mtu(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    sys_root = copy_tree(tmp_path, "sys")
    n = NetworkCollector(vpn_interfaces=["tun0"], proc_root=proc, sys_root=sys_root)
    n.collect(1.0)
    gone = dict(SECOND)
    del gone["tun0"]
    (proc / "net" / "dev").write_text(net_dev(gone))
    assert values(n.collect(2.0))[("net_up", labels(interface="tun0"))] == 0.0
    (sys_root / "class" / "net" / "tun0" / "mtu").write_text("1280\n")
    (proc / "net" / "dev").write_text(net_dev(SECOND))
    assert values(n.collect(3.0))[("net_mtu", labels(interface="tun0"))] == 1280.0
