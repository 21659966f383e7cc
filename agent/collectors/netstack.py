"""Kernel network stack: UDP buffer/input errors, conntrack fill, IP forwarding.

Conntrack is read only through its two counters under /proc/sys/net/netfilter/ — never
/proc/net/nf_conntrack, which lists every tracked connection with its addresses.

The UDP error counters and the conntrack entry count are read every cycle; the settings that
rarely change (the conntrack table size, the forwarding switches) are cached for a few seconds
of ``now`` (``CONNTRACK_MAX_REFRESH_SECONDS``, ``FORWARDING_REFRESH_SECONDS``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from agent.collectors.counters import CounterDeltas
from agent.collectors.sources import SOURCE_ERRORS, read_bytes, read_int, why
from agent.samples import Sample, SourceUnavailable, labels

CONNTRACK_MAX_REFRESH_SECONDS = 30.0
FORWARDING_REFRESH_SECONDS = 10.0

UDP_FIELDS = {
    "RcvbufErrors": "udp_rcvbuf_errors_per_second",
    "SndbufErrors": "udp_sndbuf_errors_per_second",
    "InErrors": "udp_in_errors_per_second",
}


@functools.lru_cache(maxsize=4)
def _udp_columns(header: bytes) -> tuple[int, tuple[tuple[int, str], ...]]:
    """(column count, (column, field) for the UDP_FIELDS) of the ``Udp:`` header line."""
    names = header.split()
    wanted = tuple((i, n.decode()) for i, n in enumerate(names) if n.decode() in UDP_FIELDS)
    return len(names), wanted


def parse_snmp_udp(data: bytes) -> dict[str, int]:
    """The UDP_FIELDS of the ``Udp:`` header/value line pair of /proc/net/snmp (not UdpLite)."""
    data = b"\n" + data
    head = data.find(b"\nUdp: ")
    if head < 0:
        raise ValueError("no Udp lines")
    mid = data.find(b"\n", head + 1)
    end = data.find(b"\n", mid + 1)
    if mid < 0 or not data.startswith(b"Udp: ", mid + 1):
        raise ValueError("no Udp lines")
    count, columns = _udp_columns(data[head + 6 : mid])
    numbers = data[mid + 6 : end if end >= 0 else len(data)].split()
    if len(numbers) != count:
        raise ValueError("Udp lines of different lengths")
    return {field: int(numbers[i]) for i, field in columns}


_UDP6_KEYS = tuple((f, b"\nUdp6" + f.encode()) for f in UDP_FIELDS)


def parse_snmp6_udp(data: bytes) -> dict[str, int]:
    """The ``Udp6<field> value`` lines of /proc/net/snmp6 for the UDP_FIELDS, keyed without the
    "Udp6" prefix (a field the kernel lacks is left out)."""
    out: dict[str, int] = {}
    data = b"\n" + data
    for field, key in _UDP6_KEYS:
        start = data.find(key)
        while start >= 0:
            start += len(key)
            end = data.find(b"\n", start)
            value = data[start:end] if end >= 0 else data[start:]
            if value[:1].isspace():  # not a longer name that starts the same
                out[field] = int(value)
                break
            start = data.find(key, start)
    return out


class UdpCollector:
    """udp_rcvbuf/sndbuf/in_errors_per_second, IPv4 and IPv6 summed."""

    name = "udp"

    def __init__(self, *, proc_root: Path = Path("/proc")) -> None:
        self._snmp = str(proc_root / "net" / "snmp")
        self._snmp6 = str(proc_root / "net" / "snmp6")
        self._deltas: CounterDeltas[tuple[str, str]] = CounterDeltas()
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        reading: dict[tuple[str, str], float] = {}
        try:
            v4 = parse_snmp_udp(read_bytes(self._snmp))
        except SOURCE_ERRORS as exc:
            self._deltas.reset()
            raise SourceUnavailable(f"UDP counters unreadable: {why(self._snmp, exc)}") from None
        reading.update(((f, "v4"), v) for f, v in v4.items())
        problems: list[str] = []
        try:
            v6 = parse_snmp6_udp(read_bytes(self._snmp6))
        except FileNotFoundError:
            pass  # IPv6 disabled: IPv4 alone
        except SOURCE_ERRORS as exc:
            problems.append(f"UDP over IPv6 counters unreadable: {why(self._snmp6, exc)}")
        else:
            reading.update(((f, "v6"), v) for f, v in v6.items())
        self._problems = tuple(problems)
        result = self._deltas.update(now, reading)
        if result is None:
            return []
        elapsed, d = result
        out: list[Sample] = []
        for field, metric in UDP_FIELDS.items():
            v4_delta, v6_delta = d.get((field, "v4")), d.get((field, "v6"))
            if v4_delta is None and v6_delta is None:
                continue  # absent when the counters went back (reset)
            out.append(Sample(metric, ((v4_delta or 0) + (v6_delta or 0)) / elapsed))
        return out


class ConntrackCollector:
    """conntrack_entries, conntrack_max, conntrack_used_percent.

    The entry count is read every cycle; the table size every ``CONNTRACK_MAX_REFRESH_SECONDS``
    of ``now`` (and again after any read failed, e.g. the module was reloaded).
    """

    name = "conntrack"

    def __init__(self, *, proc_root: Path = Path("/proc")) -> None:
        base = proc_root / "sys" / "net" / "netfilter"
        self._count = str(base / "nf_conntrack_count")
        self._max = str(base / "nf_conntrack_max")
        self._maximum = 0
        self._max_at: float | None = None

    def collect(self, now: float) -> Sequence[Sample]:
        try:
            count = read_int(self._count)
            at = self._max_at
            if at is None or not 0 <= now - at < CONNTRACK_MAX_REFRESH_SECONDS:
                self._maximum, self._max_at = read_int(self._max), now
        except FileNotFoundError:
            self._max_at = None
            raise SourceUnavailable(
                f"conntrack module not loaded ({self._count} missing)"
            ) from None
        except SOURCE_ERRORS as exc:
            self._max_at = None
            raise SourceUnavailable(
                f"conntrack counters unreadable: {why(self._count, exc)}"
            ) from None
        maximum = self._maximum
        out = [Sample("conntrack_entries", float(count)), Sample("conntrack_max", float(maximum))]
        if maximum > 0:
            out.append(Sample("conntrack_used_percent", count / maximum * 100.0))
        return out


_FAMILY_LABELS = {"ipv4": labels(family="ipv4"), "ipv6": labels(family="ipv6")}


class ForwardingCollector:
    """ip_forwarding{family="ipv4"|"ipv6"}.

    A successful reading is kept for ``FORWARDING_REFRESH_SECONDS`` of ``now``; while neither
    setting can be read, both are tried every cycle.
    """

    name = "forwarding"

    def __init__(self, *, proc_root: Path = Path("/proc")) -> None:
        net = proc_root / "sys" / "net"
        self._paths = (
            ("ipv4", str(net / "ipv4" / "ip_forward")),
            ("ipv6", str(net / "ipv6" / "conf" / "all" / "forwarding")),
        )
        self._problems: tuple[str, ...] = ()
        self._cached: tuple[Sample, ...] = ()
        self._read_at: float | None = None

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        at = self._read_at
        if at is not None and 0 <= now - at < FORWARDING_REFRESH_SECONDS:
            return self._cached
        self._read_at = None
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
            out.append(Sample("ip_forwarding", 1.0 if value else 0.0, _FAMILY_LABELS[family]))
        if not out:
            raise SourceUnavailable("IP forwarding settings unreadable: " + ", ".join(problems))
        self._problems = tuple(problems)
        self._cached, self._read_at = tuple(out), now
        return self._cached
