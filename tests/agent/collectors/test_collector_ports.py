from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors.ports import PortCollector, local_port_and_state
from agent.samples import SourceUnavailable

from .collector_testkit import PROC, assert_valid, by_label, copy_tree

CONFIGURED = [
    ("udp", 1194),
    ("tcp", 443),
    ("any", 51820),
    ("udp", 443),
    ("tcp", 8443),
    ("tcp", 1194),
    ("any", 22),
]


def remote_addresses() -> set[str]:
    """Every remote address:port in the socket fixtures (the test may look; the agent not)."""
    out: set[str] = set()
    for name in ("tcp", "tcp6", "udp", "udp6"):
        for line in (PROC / "net" / name).read_text().splitlines()[1:]:
            remote = line.split()[2]
            if remote.strip("0:"):
                out.add(remote)
                out.add(remote.partition(":")[0])
    return out


def test_listening_ports_exact() -> None:
    p = PortCollector(vpn_ports=CONFIGURED, proc_root=PROC)
    samples = p.collect(1.0)
    assert_valid(samples)
    assert by_label(samples, "vpn_port_listening", "port") == {
        "udp/1194": 1.0,
        "tcp/443": 1.0,
        "udp/51820": 1.0,  # "any": found on UDP (IPv6 socket)
        "udp/443": 0.0,  # only a connected (per-client) socket: not bound for the service
        "tcp/8443": 1.0,  # IPv6 listener
        "tcp/1194": 0.0,
        "tcp/22": 1.0,  # "any": found on TCP
    }
    assert p.problems() == ()


def test_no_remote_address_anywhere() -> None:
    remotes = remote_addresses()
    assert len(remotes) > 40
    p = PortCollector(vpn_ports=CONFIGURED, proc_root=PROC)
    samples = p.collect(1.0)
    kept = repr(samples) + repr(p) + repr(vars(p))
    leaked = [r for r in remotes if r in kept]
    assert leaked == []


def test_result_cached_between_refreshes(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    p = PortCollector(vpn_ports=[("tcp", 443)], proc_root=proc, refresh_seconds=10.0)
    assert by_label(p.collect(0.0), "vpn_port_listening", "port") == {"tcp/443": 1.0}
    tcp = proc / "net" / "tcp"
    tcp.write_text(
        tcp.read_text().replace("00000000:01BB 00000000:0000 0A", "00000000:0050 00000000:0000 0A")
    )
    assert by_label(p.collect(9.0), "vpn_port_listening", "port") == {"tcp/443": 1.0}
    assert by_label(p.collect(10.0), "vpn_port_listening", "port") == {"tcp/443": 0.0}


def test_any_keeps_the_protocol_it_was_found_on(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    p = PortCollector(vpn_ports=[("any", 8443), ("any", 4500)], proc_root=proc, refresh_seconds=0.0)
    assert by_label(p.collect(0.0), "vpn_port_listening", "port") == {
        "tcp/8443": 1.0,
        "udp/4500": 0.0,  # never found: reported under udp
    }
    (proc / "net" / "tcp6").unlink()  # the listener is gone (and so is IPv6: not a problem)
    assert by_label(p.collect(1.0), "vpn_port_listening", "port") == {
        "tcp/8443": 0.0,
        "udp/4500": 0.0,
    }
    assert p.problems() == ()


def test_unreadable_tables(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    for name in ("tcp", "tcp6"):
        (proc / "net" / name).unlink()
    p = PortCollector(vpn_ports=[("tcp", 443), ("udp", 1194)], proc_root=proc)
    assert by_label(p.collect(0.0), "vpn_port_listening", "port") == {"udp/1194": 1.0}
    assert p.problems() == (f"{proc}/net/tcp missing",)
    empty = PortCollector(vpn_ports=[("tcp", 443)], proc_root=tmp_path / "none")
    with pytest.raises(SourceUnavailable, match=r"socket tables unreadable: .*/net/tcp missing"):
        empty.collect(0.0)


@pytest.mark.parametrize("bad", [("sctp", 1), ("tcp", 0), ("udp", 65536)])
def test_bad_configuration_refused(bad: tuple[str, int]) -> None:
    with pytest.raises(ValueError, match="VPN port"):
        PortCollector(vpn_ports=[bad])


def test_line_parser() -> None:
    lines = (PROC / "net" / "tcp").read_text().splitlines()
    assert local_port_and_state(lines[0]) is None  # header
    assert local_port_and_state(lines[1]) == (443, "0A")
    assert local_port_and_state("   0: garbled") is None
    assert local_port_and_state("") is None
