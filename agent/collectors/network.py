"""Per-interface state and traffic; per-session interfaces only as a group sum and a count.

Traffic and error counters come from /proc/net/dev (one read for all interfaces); link state,
MTU and speed from /sys/class/net/<if>/ for the interfaces reported individually only, so the
cost does not grow with the number of VPN sessions. Per-session interfaces (``vpns*``, ``ppp*``
by default) are never listed: their traffic is summed under "<prefix>+" and their number is
vpn_active_peers{source="sessions"} (an ocserv/pppd session interface exists exactly while its
session is established, so being listed in /proc/net/dev is what counts as up).

Link state (flags, operstate) is read every cycle; MTU and speed, which rarely change, every
``LINK_REFRESH_SECONDS`` — and at once when the interface's up state changes or it comes back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from agent.collectors.sources import SOURCE_ERRORS, read_bytes, read_int, why
from agent.metrics import LABELS
from agent.samples import Labels, Sample, SourceUnavailable, labels

DEFAULT_SESSION_PREFIXES = ("vpns", "ppp")
EXCLUDED_PREFIXES = ("veth", "docker", "br-", "virbr", "ifb")
TUNNEL_PREFIXES = ("tun", "tap", "wg")
IFF_UP = 0x1
_RUNNING_OPERSTATES = frozenset({b"up", b"unknown"})  # the kernel's IFF_RUNNING (netif_oper_up)
_IFACE_LABEL = LABELS["interface"]
_CLASSIFY_CACHE_MAX = 256
LINK_REFRESH_SECONDS = 30.0
_REPORT, _UNUSABLE, _IGNORE = "\0report", "\0unusable", "\0ignore"
"""Interface kinds besides a session prefix (which is a usable label, so never one of these)."""
_SESSIONS = labels(source="sessions")

Counters = tuple[int, int, int, int]
"""rx bytes, tx bytes, errors (in + out), drops (in + out)."""


def parse_net_dev(data: bytes) -> dict[str, Counters]:
    out: dict[str, Counters] = {}
    for line in data.split(b"\n")[2:]:
        name, sep, rest = line.partition(b":")
        if not sep:
            continue
        f = rest.split()
        out[name.strip().decode("ascii", "replace")] = (
            int(f[0]),
            int(f[8]),
            int(f[2]) + int(f[10]),
            int(f[3]) + int(f[11]),
        )
    return out


class _Link:
    """One individually reported interface: its sysfs paths, labels and cached MTU/speed."""

    __slots__ = (
        "at",
        "flags",
        "labels",
        "mtu",
        "mtu_path",
        "operstate",
        "speed",
        "speed_path",
        "up",
    )

    def __init__(self, base: str, name: str) -> None:
        self.flags = f"{base}/{name}/flags"
        self.operstate = f"{base}/{name}/operstate"
        self.mtu_path = f"{base}/{name}/mtu"
        self.speed_path = f"{base}/{name}/speed"
        self.labels = labels(interface=name)
        self.at: float | None = None  # when mtu and speed were read; None: to be read
        self.up = False
        self.mtu: int | None = None
        self.speed = 0


class NetworkCollector:
    """net_up, net_mtu, net_rx/tx_bytes_per_second, net_errors/drops_per_second,
    net_link_utilization_percent per interface; vpn_active_peers{source="sessions"}.

    Whether an interface is reported individually is worked out once per name and cached (at
    most ``_CLASSIFY_CACHE_MAX`` names); session interfaces are told by their prefix each cycle.
    MTU and speed are cached for ``LINK_REFRESH_SECONDS`` of ``now``, and re-read at once when
    the interface's up state changes or after it was missing or unreadable.
    """

    name = "network"

    def __init__(
        self,
        *,
        vpn_interfaces: Sequence[str] = (),
        session_prefixes: Sequence[str] = DEFAULT_SESSION_PREFIXES,
        proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
    ) -> None:
        for prefix in session_prefixes:
            if not _IFACE_LABEL.allows(prefix + "+"):
                raise ValueError(f"session interface prefix {prefix!r} is not a usable label")
        self._prefixes = tuple(session_prefixes)
        self._group_labels = {p: labels(interface=p + "+") for p in self._prefixes}
        self._net_dev = str(proc_root / "net" / "dev")
        self._class_net = str(sys_root / "class" / "net")
        self._notes: list[str] = []
        configured: list[str] = []
        for name in dict.fromkeys(vpn_interfaces):
            if self._session_prefix(name) is not None:
                self._notes.append(
                    f"interface {name} is configured but is a per-session interface; "
                    "it is reported only within its '<prefix>+' sum"
                )
            elif not _IFACE_LABEL.allows(name):
                raise ValueError(f"interface name {name!r} is not a usable label")
            else:
                configured.append(name)
        self._configured = tuple(configured)
        # name -> _REPORT, _UNUSABLE or _IGNORE (session interfaces are not kept)
        self._kind: dict[str, str] = {name: _REPORT for name in self._configured}
        self._links: dict[str, _Link] = {}
        self._groups_seen: set[str] = set()
        self._prev: dict[str, Counters] = {}
        self._prev_now: float | None = None
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def _session_prefix(self, name: str) -> str | None:
        for prefix in self._prefixes:
            if name.startswith(prefix):
                return prefix
        return None

    def _classify(self, name: str) -> str:
        """A session prefix (not cached: sessions come and go), or whether the interface is
        reported individually: tunnels and physical interfaces are, without being configured."""
        prefix = self._session_prefix(name)
        if prefix is not None:
            return prefix
        if name == "lo" or name.startswith(EXCLUDED_PREFIXES):
            kind = _IGNORE
        elif name.startswith(TUNNEL_PREFIXES) or os.path.exists(f"{self._class_net}/{name}/device"):
            kind = _REPORT if _IFACE_LABEL.allows(name) else _UNUSABLE
        else:
            kind = _IGNORE
        if len(self._kind) >= _CLASSIFY_CACHE_MAX + len(self._configured):
            self._kind = {name: _REPORT for name in self._configured}
        self._kind[name] = kind
        return kind

    def collect(self, now: float) -> Sequence[Sample]:
        try:
            current = parse_net_dev(read_bytes(self._net_dev))
        except SOURCE_ERRORS as exc:
            self._prev, self._prev_now = {}, None
            msg = f"interface counters unreadable: {why(self._net_dev, exc)}"
            raise SourceUnavailable(msg) from None
        prev, prev_now = self._prev, self._prev_now
        self._prev, self._prev_now = current, now
        elapsed = now - prev_now if prev_now is not None and now > prev_now else None
        problems = list(self._notes)

        reported: set[str] = set(self._configured)
        sums: dict[str, list[int]] = {}
        sessions = 0
        unusable = 0
        kinds = self._kind
        for name, (rx, tx, err, drop) in current.items():
            kind = kinds.get(name) or self._classify(name)
            if kind == _REPORT:
                reported.add(name)
            elif kind == _IGNORE:
                continue
            elif kind == _UNUSABLE:
                unusable += 1
            else:  # a session interface: summed under its prefix
                sessions += 1
                self._groups_seen.add(kind)
                group = sums.get(kind)
                if group is None:
                    group = sums[kind] = [0, 0, 0, 0]
                before = prev.get(name)
                if before is None:
                    continue
                d_rx, d_tx = rx - before[0], tx - before[1]
                d_err, d_drop = err - before[2], drop - before[3]
                if d_rx >= 0 and d_tx >= 0 and d_err >= 0 and d_drop >= 0:  # else a reset
                    group[0] += d_rx
                    group[1] += d_tx
                    group[2] += d_err
                    group[3] += d_drop
        if unusable:
            problems.append(f"{unusable} interface(s) not reported: name not usable as a label")

        out: list[Sample] = []
        for name in sorted(reported):
            self._interface(now, name, current.get(name), prev.get(name), elapsed, out)
        if elapsed is not None:
            for prefix in sorted(self._groups_seen):
                total = sums.get(prefix) or [0, 0, 0, 0]
                _traffic(self._group_labels[prefix], total, elapsed, out)
        if self._groups_seen:
            out.append(Sample("vpn_active_peers", float(sessions), _SESSIONS))
        self._problems = tuple(problems)
        return out

    def _interface(
        self,
        now: float,
        name: str,
        counters: Counters | None,
        before: Counters | None,
        elapsed: float | None,
        out: list[Sample],
    ) -> None:
        link = self._links.get(name)
        if link is None:
            if len(self._links) >= _CLASSIFY_CACHE_MAX:
                self._links.clear()
            link = self._links[name] = _Link(self._class_net, name)
        iface = link.labels
        if counters is None:
            link.at = None  # missing: read MTU and speed afresh when it is back
            out.append(Sample("net_up", 0.0, iface))
            return
        up, mtu, speed = self._link(now, link)
        out.append(Sample("net_up", 1.0 if up else 0.0, iface))
        if mtu is not None:
            out.append(Sample("net_mtu", float(mtu), iface))
        delta = _delta(counters, before)
        if elapsed is None or delta is None:
            return
        _traffic(iface, delta, elapsed, out)
        if speed > 0:
            busiest = max(delta[0], delta[1]) / elapsed * 8.0
            util = busiest / (speed * 1e6) * 100.0
            out.append(Sample("net_link_utilization_percent", util, iface))

    def _link(self, now: float, link: _Link) -> tuple[bool, int | None, int]:
        """(up, mtu, speed in Mbit/s; 0 if unknown) from sysfs."""
        try:
            flags = int(read_bytes(link.flags), 16)
            operstate = read_bytes(link.operstate).strip()
        except SOURCE_ERRORS:
            link.at = None
            return False, None, 0
        up = bool(flags & IFF_UP) and operstate in _RUNNING_OPERSTATES
        at = link.at
        if at is None or up != link.up or not 0 <= now - at < LINK_REFRESH_SECONDS:
            link.at, link.up = now, up
            try:
                link.mtu = read_int(link.mtu_path)
            except SOURCE_ERRORS:
                link.mtu = None
            try:
                link.speed = max(0, read_int(link.speed_path))
            except SOURCE_ERRORS:  # EINVAL for virtual interfaces and links without carrier
                link.speed = 0
        return up, link.mtu, link.speed


def _delta(counters: Counters, before: Counters | None) -> Counters | None:
    if before is None:
        return None
    rx, tx = counters[0] - before[0], counters[1] - before[1]
    err, drop = counters[2] - before[2], counters[3] - before[3]
    if rx < 0 or tx < 0 or err < 0 or drop < 0:  # counter reset: no rate this cycle
        return None
    return rx, tx, err, drop


def _traffic(iface: Labels, delta: Sequence[int], elapsed: float, out: list[Sample]) -> None:
    out.append(Sample("net_rx_bytes_per_second", delta[0] / elapsed, iface))
    out.append(Sample("net_tx_bytes_per_second", delta[1] / elapsed, iface))
    out.append(Sample("net_errors_per_second", delta[2] / elapsed, iface))
    out.append(Sample("net_drops_per_second", delta[3] / elapsed, iface))
