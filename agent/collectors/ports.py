"""Whether the VPN service's configured local ports are listening (/proc/net/{tcp,udp}[6]).

Only two columns of each socket line are read: the local address's port and the state. The
remote address column is skipped over by position, never split out, parsed or stored. TCP
files are read only as far as the listening sockets go: the kernel lists all listening sockets
before any connection, so reading stops at the first non-listening line and the cost does not
grow with the number of VPN connections.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from agent.collectors.sources import SOURCE_ERRORS, why
from agent.samples import Sample, SourceUnavailable, labels

PROTOS = ("tcp", "udp", "any")
TCP_LISTEN = "0A"
UDP_BOUND = "07"  # an unconnected UDP socket (TCP_CLOSE): bound and receiving
REFRESH_SECONDS = 10.0


def local_port_and_state(line: str) -> tuple[int, str] | None:
    """(local port, state hex) of one socket line; None for the header or a garbled line."""
    n = len(line)
    i = line.find(":") + 1  # past "sl:"
    if i <= 0:
        return None
    while i < n and line[i] == " ":
        i += 1
    end_local = line.find(" ", i)
    colon = line.rfind(":", i, end_local)
    if end_local < 0 or colon < 0:
        return None
    k = end_local
    while k < n and line[k] == " ":
        k += 1
    k = line.find(" ", k)  # over the remote address column, unread
    if k < 0:
        return None
    while k < n and line[k] == " ":
        k += 1
    try:
        return int(line[colon + 1 : end_local], 16), line[k : k + 2]
    except ValueError:
        return None


def scan(lines: Iterable[str], state: str, wanted: set[int], *, stop_at_other: bool) -> set[int]:
    """The wanted ports that have a socket in ``state``."""
    found: set[int] = set()
    for line in lines:
        parsed = local_port_and_state(line)
        if parsed is None:
            continue
        port, st = parsed
        if st != state:
            if stop_at_other:
                break
            continue
        if port in wanted:
            found.add(port)
            if found == wanted:
                break
    return found


class PortCollector:
    """vpn_port_listening{port="udp/51820"} for each configured (proto, port).

    For proto "any" the label is "tcp/N" when found listening on TCP, "udp/N" when bound on
    UDP; when found on neither it keeps the proto it was last found on (udp if never found),
    so the series that was 1 becomes 0. Re-checked every ``refresh_seconds``.
    """

    name = "vpn_ports"

    def __init__(
        self,
        *,
        vpn_ports: Sequence[tuple[str, int]],
        proc_root: Path = Path("/proc"),
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        for proto, port in vpn_ports:
            if proto not in PROTOS or not 1 <= port <= 65535:
                raise ValueError(f"VPN port must be (tcp|udp|any, 1-65535), not {proto}/{port}")
        self._ports = tuple(dict.fromkeys(vpn_ports))
        net = proc_root / "net"
        self._files = {
            "tcp": (net / "tcp", net / "tcp6"),
            "udp": (net / "udp", net / "udp6"),
        }
        self._refresh = refresh_seconds
        self._last_any: dict[int, str] = {}
        self._cached: tuple[Sample, ...] = ()
        self._checked: float | None = None
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        if self._checked is not None and 0 <= now - self._checked < self._refresh:
            return self._cached
        problems: list[str] = []
        found = {
            proto: self._find(proto, {p for pr, p in self._ports if pr in (proto, "any")}, problems)
            for proto in ("tcp", "udp")
        }
        values: dict[str, float] = {}
        for proto, port in self._ports:
            if proto == "any":
                on_tcp, on_udp = found["tcp"] or set(), found["udp"] or set()
                if port in on_tcp or port in on_udp:
                    self._last_any[port] = "tcp" if port in on_tcp else "udp"
                proto = self._last_any.get(port, "udp")
            hit = found[proto]
            if hit is None:
                continue  # that protocol's socket table is unreadable
            label = f"{proto}/{port}"
            values[label] = max(values.get(label, 0.0), 1.0 if port in hit else 0.0)
        if self._ports and not values:
            raise SourceUnavailable("socket tables unreadable: " + "; ".join(problems))
        self._problems = tuple(problems)
        self._cached = tuple(
            Sample("vpn_port_listening", v, labels(port=label))
            for label, v in sorted(values.items())
        )
        self._checked = now
        return self._cached

    def _find(self, proto: str, wanted: set[int], problems: list[str]) -> set[int] | None:
        """Wanted ports found on ``proto`` (v4 and v6), or None if no table could be read."""
        if not wanted:
            return set()
        found: set[int] = set()
        read_any = False
        for path in self._files[proto]:
            try:
                with open(path, encoding="ascii", errors="replace") as f:
                    f.readline()  # header
                    if proto == "tcp":
                        found |= scan(f, TCP_LISTEN, wanted - found, stop_at_other=True)
                    else:
                        found |= scan(f, UDP_BOUND, wanted - found, stop_at_other=False)
            except FileNotFoundError:
                if not path.name.endswith("6"):
                    problems.append(why(path, FileNotFoundError()))
                continue  # no IPv6: IPv4 alone
            except SOURCE_ERRORS as exc:
                problems.append(why(path, exc))
                continue
            read_any = True
            if found == wanted:
                break
        return found if read_any else None
