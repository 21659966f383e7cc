"""Per-interface state and traffic; per-session interfaces only as a group sum and a count.

Traffic and error counters come from /proc/net/dev (one read for all interfaces); link state,
MTU and speed from /sys/class/net/<if>/ for the interfaces reported individually only, so the
cost does not grow with the number of VPN sessions. Per-session interfaces (``vpns*``, ``ppp*``
by default) are never listed: their traffic is summed under "<prefix>+" and their number is
vpn_active_peers{source="sessions"} (an ocserv/pppd session interface exists exactly while its
session is established, so being listed in /proc/net/dev is what counts as up).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.collectors.sources import SOURCE_ERRORS, read_int, read_text, why
from agent.metrics import LABELS
from agent.samples import Labels, Sample, SourceUnavailable, labels

DEFAULT_SESSION_PREFIXES = ("vpns", "ppp")
EXCLUDED_PREFIXES = ("veth", "docker", "br-", "virbr", "ifb")
TUNNEL_PREFIXES = ("tun", "tap", "wg")
IFF_UP = 0x1
_RUNNING_OPERSTATES = frozenset({"up", "unknown"})  # the kernel's IFF_RUNNING (netif_oper_up)
_IFACE_LABEL = LABELS["interface"]
_CLASSIFY_CACHE_MAX = 256

Counters = tuple[int, int, int, int]
"""rx bytes, tx bytes, errors (in + out), drops (in + out)."""


def parse_net_dev(text: str) -> dict[str, Counters]:
    out: dict[str, Counters] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        f = rest.split()
        out[name.strip()] = (
            int(f[0]),
            int(f[8]),
            int(f[2]) + int(f[10]),
            int(f[3]) + int(f[11]),
        )
    return out


class NetworkCollector:
    """net_up, net_mtu, net_rx/tx_bytes_per_second, net_errors/drops_per_second,
    net_link_utilization_percent per interface; vpn_active_peers{source="sessions"}."""

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
        self._net_dev = proc_root / "net" / "dev"
        self._class_net = sys_root / "class" / "net"
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
        self._auto: dict[str, bool] = {}
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

    def _wanted(self, name: str) -> bool:
        """Reported individually without being configured: tunnels and physical interfaces."""
        wanted = self._auto.get(name)
        if wanted is None:
            if name == "lo" or name.startswith(EXCLUDED_PREFIXES):
                wanted = False
            elif name.startswith(TUNNEL_PREFIXES):
                wanted = True
            else:
                wanted = (self._class_net / name / "device").exists()
            if len(self._auto) >= _CLASSIFY_CACHE_MAX:
                self._auto.clear()
            self._auto[name] = wanted
        return wanted

    def collect(self, now: float) -> Sequence[Sample]:
        try:
            current = parse_net_dev(read_text(self._net_dev))
        except SOURCE_ERRORS as exc:
            self._prev, self._prev_now = {}, None
            msg = f"interface counters unreadable: {why(self._net_dev, exc)}"
            raise SourceUnavailable(msg) from None
        prev, prev_now = self._prev, self._prev_now
        self._prev, self._prev_now = current, now
        elapsed = now - prev_now if prev_now is not None and now > prev_now else None
        problems = list(self._notes)

        reported: set[str] = set(self._configured)
        groups: dict[str, list[Counters]] = {}
        sessions = 0
        unusable = 0
        for name, counters in current.items():
            prefix = self._session_prefix(name)
            if prefix is not None:
                sessions += 1
                self._groups_seen.add(prefix)
                delta = _delta(counters, prev.get(name))
                group = groups.setdefault(prefix, [])
                if delta is not None:
                    group.append(delta)
            elif name not in reported and self._wanted(name):
                if _IFACE_LABEL.allows(name):
                    reported.add(name)
                else:
                    unusable += 1
        if unusable:
            problems.append(f"{unusable} interface(s) not reported: name not usable as a label")

        out: list[Sample] = []
        for name in sorted(reported):
            self._interface(name, current.get(name), prev.get(name), elapsed, out)
        if elapsed is not None:
            for prefix in sorted(self._groups_seen):
                deltas = groups.get(prefix, [])
                iface = labels(interface=prefix + "+")
                _traffic(iface, [sum(d[i] for d in deltas) for i in range(4)], elapsed, out)
        if self._groups_seen:
            out.append(Sample("vpn_active_peers", float(sessions), labels(source="sessions")))
        self._problems = tuple(problems)
        return out

    def _interface(
        self,
        name: str,
        counters: Counters | None,
        before: Counters | None,
        elapsed: float | None,
        out: list[Sample],
    ) -> None:
        iface = labels(interface=name)
        if counters is None:
            out.append(Sample("net_up", 0.0, iface))
            return
        up, mtu, speed = self._link(name)
        out.append(Sample("net_up", 1.0 if up else 0.0, iface))
        if mtu is not None:
            out.append(Sample("net_mtu", float(mtu), iface))
        delta = _delta(counters, before)
        if elapsed is None or delta is None:
            return
        _traffic(iface, list(delta), elapsed, out)
        if speed > 0:
            busiest = max(delta[0], delta[1]) / elapsed * 8.0
            util = busiest / (speed * 1e6) * 100.0
            out.append(Sample("net_link_utilization_percent", util, iface))

    def _link(self, name: str) -> tuple[bool, int | None, int]:
        """(up, mtu, speed in Mbit/s; 0 if unknown) from sysfs."""
        base = self._class_net / name
        try:
            flags = int(read_text(base / "flags"), 16)
            operstate = read_text(base / "operstate").strip()
        except SOURCE_ERRORS:
            return False, None, 0
        mtu: int | None
        try:
            mtu = read_int(base / "mtu")
        except SOURCE_ERRORS:
            mtu = None
        try:
            speed = max(0, read_int(base / "speed"))
        except SOURCE_ERRORS:  # EINVAL for virtual interfaces and links without carrier
            speed = 0
        return bool(flags & IFF_UP) and operstate in _RUNNING_OPERSTATES, mtu, speed


def _delta(counters: Counters, before: Counters | None) -> Counters | None:
    if before is None:
        return None
    rx, tx, err, drop = (a - b for a, b in zip(counters, before, strict=True))
    if rx < 0 or tx < 0 or err < 0 or drop < 0:  # counter reset: no rate this cycle
        return None
    return rx, tx, err, drop


def _traffic(iface: Labels, delta: Sequence[int], elapsed: float, out: list[Sample]) -> None:
    out.append(Sample("net_rx_bytes_per_second", delta[0] / elapsed, iface))
    out.append(Sample("net_tx_bytes_per_second", delta[1] / elapsed, iface))
    out.append(Sample("net_errors_per_second", delta[2] / elapsed, iface))
    out.append(Sample("net_drops_per_second", delta[3] / elapsed, iface))
