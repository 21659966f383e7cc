"""Kernel network stack: UDP buffer/input errors, conntrack fill, IP forwarding.

Conntrack is read only through its two counters under /proc/sys/net/netfilter/ — never
/proc/net/nf_conntrack, which lists every tracked connection with its addresses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.collectors.counters import CounterDeltas
from agent.collectors.sources import SOURCE_ERRORS, read_int, read_text, why
from agent.samples import Sample, SourceUnavailable, labels

UDP_FIELDS = {
    "RcvbufErrors": "udp_rcvbuf_errors_per_second",
    "SndbufErrors": "udp_sndbuf_errors_per_second",
    "InErrors": "udp_in_errors_per_second",
}


def parse_snmp_udp(text: str) -> dict[str, int]:
    """The ``Udp:`` header/value line pair of /proc/net/snmp as a dict (not UdpLite)."""
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp: ")]
    if len(rows) < 2:
        raise ValueError("no Udp lines")
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}


def parse_snmp6_udp(text: str) -> dict[str, int]:
    """``Udp6RcvbufErrors 0`` lines of /proc/net/snmp6, keyed without the "Udp6" prefix."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("Udp6"):
            key, _, value = line.partition(" ")
            out[key[4:]] = int(value)
    return out


class UdpCollector:
    """udp_rcvbuf/sndbuf/in_errors_per_second, IPv4 and IPv6 summed."""

    name = "udp"

    def __init__(self, *, proc_root: Path = Path("/proc")) -> None:
        self._snmp = proc_root / "net" / "snmp"
        self._snmp6 = proc_root / "net" / "snmp6"
        self._deltas: CounterDeltas[tuple[str, str]] = CounterDeltas()
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        reading: dict[tuple[str, str], float] = {}
        try:
            v4 = parse_snmp_udp(read_text(self._snmp))
        except SOURCE_ERRORS as exc:
            self._deltas.reset()
            raise SourceUnavailable(f"UDP counters unreadable: {why(self._snmp, exc)}") from None
        reading.update(((f, "v4"), v) for f, v in v4.items() if f in UDP_FIELDS)
        problems: list[str] = []
        try:
            v6 = parse_snmp6_udp(read_text(self._snmp6))
        except FileNotFoundError:
            pass  # IPv6 disabled: IPv4 alone
        except SOURCE_ERRORS as exc:
            problems.append(f"UDP over IPv6 counters unreadable: {why(self._snmp6, exc)}")
        else:
            reading.update(((f, "v6"), v) for f, v in v6.items() if f in UDP_FIELDS)
        self._problems = tuple(problems)
        result = self._deltas.update(now, reading)
        if result is None:
            return []
        elapsed, d = result
        out: list[Sample] = []
        for field, metric in UDP_FIELDS.items():
            parts = [v for (f, _), v in d.items() if f == field]
            if parts:  # absent when the counters went back (reset)
                out.append(Sample(metric, sum(parts) / elapsed))
        return out


class ConntrackCollector:
    """conntrack_entries, conntrack_max, conntrack_used_percent."""

    name = "conntrack"

    def __init__(self, *, proc_root: Path = Path("/proc")) -> None:
        base = proc_root / "sys" / "net" / "netfilter"
        self._count = base / "nf_conntrack_count"
        self._max = base / "nf_conntrack_max"

    def collect(self, now: float) -> Sequence[Sample]:
        try:
            count = read_int(self._count)
            maximum = read_int(self._max)
        except FileNotFoundError:
            raise SourceUnavailable(
                f"conntrack module not loaded ({self._count} missing)"
            ) from None
        except SOURCE_ERRORS as exc:
            raise SourceUnavailable(
                f"conntrack counters unreadable: {why(self._count, exc)}"
            ) from None
        out = [Sample("conntrack_entries", float(count)), Sample("conntrack_max", float(maximum))]
        if maximum > 0:
            out.append(Sample("conntrack_used_percent", count / maximum * 100.0))
        return out


class ForwardingCollector:
    """ip_forwarding{family="ipv4"|"ipv6"}."""

    name = "forwarding"

    def __init__(self, *, proc_root: Path = Path("/proc")) -> None:
        net = proc_root / "sys" / "net"
        self._paths = (
            ("ipv4", net / "ipv4" / "ip_forward"),
            ("ipv6", net / "ipv6" / "conf" / "all" / "forwarding"),
        )
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        out: list[Sample] = []
        problems: list[str] = []
        for family, path in self._paths:
            try:
                value = read_int(path)
            except FileNotFoundError:
                if family == "ipv4":
                    problems.append(why(path, FileNotFoundError()))
                continue  # IPv6 disabled: no ipv6 figure
            except SOURCE_ERRORS as exc:
                problems.append(why(path, exc))
                continue
            out.append(Sample("ip_forwarding", 1.0 if value else 0.0, labels(family=family)))
        if not out:
            raise SourceUnavailable("IP forwarding settings unreadable: " + ", ".join(problems))
        self._problems = tuple(problems)
        return out
