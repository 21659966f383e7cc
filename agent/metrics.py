"""The one table of metric definitions.

Every metric the agent can emit is declared here once, with its unit, description, label names
and privacy treatment. The collectors emit only these names; the privacy gate allows only these
names and validates each label value against its ``LabelDef``; the Prometheus exposition takes
HELP/TYPE from here; the dashboard (server side) reads the same table through the wire protocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Unit = Literal[
    "percent",
    "ratio",
    "bytes",
    "bytes_per_second",
    "per_second",
    "count",
    "seconds",
    "days",
    "bool",
    "load",
]


@dataclass(frozen=True, slots=True)
class LabelDef:
    """What one label may hold. Values outside ``pattern`` (or ``choices``) are refused."""

    name: str
    description: str
    pattern: re.Pattern[str] | None = None
    choices: frozenset[str] = frozenset()
    forbidden_prefixes: tuple[str, ...] = ()

    def allows(self, value: str) -> bool:
        if self.choices:
            return value in self.choices
        if self.pattern is None or not self.pattern.fullmatch(value):
            return False
        return not any(
            value == p.rstrip("/") or value.startswith(p) for p in self.forbidden_prefixes
        )


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    unit: Unit
    description: str
    labels: tuple[str, ...] = ()
    kind: Literal["gauge", "counter"] = "gauge"
    # A small count that could single out one end user: values below k are sent as "<k".
    coarsen: bool = False
    # A figure that follows the users' traffic (throughput, connection-table fill). With one
    # peer connected it *is* that person's bandwidth or connection count, so the gate withholds
    # it while fewer than k peers are active — and on tunnel interfaces, which carry nothing
    # but VPN users' traffic, also while the peer count is unknown.
    user_traffic: bool = False


_IFNAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}|[A-Za-z0-9_-]{1,12}\+")
_MOUNT = re.compile(r"/[A-Za-z0-9_./+-]{0,127}")
_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,32}")
_PORT = re.compile(r"(tcp|udp)/[0-9]{1,5}")

LABELS: dict[str, LabelDef] = {
    d.name: d
    for d in (
        LabelDef(
            "interface",
            "Network interface; per-session interfaces are summed under '<prefix>+'",
            pattern=_IFNAME,
        ),
        LabelDef(
            "mount",
            "Mount point",
            pattern=_MOUNT,
            # Paths that name a person are never sent.
            forbidden_prefixes=("/home/", "/run/user/", "/media/", "/Users/"),
        ),
        LabelDef("process", "VPN daemon process name (from vpn_processes)", pattern=_NAME),
        LabelDef("port", "Local listening port of the VPN service, as proto/port", pattern=_PORT),
        LabelDef("cert", "Certificate file name (base name, from cert_files)", pattern=_NAME),
        LabelDef("resource", "PSI resource", choices=frozenset({"cpu", "memory", "io"})),
        LabelDef("family", "Address family", choices=frozenset({"ipv4", "ipv6"})),
        LabelDef(
            "source",
            "Where an active-peer count comes from",
            choices=frozenset({"wireguard", "sessions"}),
        ),
        LabelDef("collector", "Agent collector name", pattern=_NAME),
    )
}


def _m(
    name: str,
    unit: Unit,
    description: str,
    *label_names: str,
    kind: Literal["gauge", "counter"] = "gauge",
    coarsen: bool = False,
    user_traffic: bool = False,
) -> MetricDef:
    for label in label_names:
        assert label in LABELS, label
    return MetricDef(name, unit, description, label_names, kind, coarsen, user_traffic)


METRICS: dict[str, MetricDef] = {
    d.name: d
    for d in (
        # CPU and load
        _m("cpu_usage_percent", "percent", "CPU busy time, all cores"),
        _m("cpu_iowait_percent", "percent", "CPU time waiting for I/O"),
        _m("cpu_steal_percent", "percent", "CPU time stolen by the hypervisor"),
        _m("cpu_count", "count", "Logical CPUs"),
        _m("load1", "load", "Load average over 1 minute"),
        _m("load5", "load", "Load average over 5 minutes"),
        _m("load15", "load", "Load average over 15 minutes"),
        _m("load1_per_cpu", "load", "1-minute load average divided by the CPU count"),
        # Memory
        _m("memory_available_percent", "percent", "Memory available to new work"),
        _m("memory_available_bytes", "bytes", "Memory available to new work"),
        _m("memory_total_bytes", "bytes", "Physical memory"),
        _m("swap_used_percent", "percent", "Swap in use"),
        _m("oom_kills", "count", "OOM-killer invocations since the previous cycle"),
        _m(
            "pressure_some_avg10",
            "percent",
            "PSI: share of time some tasks stalled (10 s)",
            "resource",
        ),
        _m(
            "pressure_full_avg10",
            "percent",
            "PSI: share of time all tasks stalled (10 s)",
            "resource",
        ),
        # Disks
        _m("disk_used_percent", "percent", "Space used on the file system", "mount"),
        _m("disk_free_bytes", "bytes", "Space free for unprivileged users", "mount"),
        _m("disk_inodes_used_percent", "percent", "Inodes used on the file system", "mount"),
        _m("disk_read_bytes_per_second", "bytes_per_second", "Disk reads, all disks"),
        _m("disk_write_bytes_per_second", "bytes_per_second", "Disk writes, all disks"),
        _m("disk_busy_percent", "percent", "Time the busiest disk was doing I/O"),
        # File descriptors
        _m("fd_used_percent", "percent", "System-wide file handles in use (of fs.file-max)"),
        _m("fd_allocated", "count", "System-wide file handles allocated"),
        # Network interfaces
        _m("net_up", "bool", "Interface is up (1) or down/missing (0)", "interface"),
        _m("net_mtu", "bytes", "Interface MTU", "interface"),
        _m(
            "net_rx_bytes_per_second",
            "bytes_per_second",
            "Bytes received",
            "interface",
            user_traffic=True,
        ),
        _m(
            "net_tx_bytes_per_second",
            "bytes_per_second",
            "Bytes sent",
            "interface",
            user_traffic=True,
        ),
        _m(
            "net_link_utilization_percent",
            "percent",
            "Busier direction's throughput as a share of link speed",
            "interface",
            user_traffic=True,
        ),
        _m("net_errors_per_second", "per_second", "Receive and send errors", "interface"),
        _m("net_drops_per_second", "per_second", "Receive and send drops", "interface"),
        # UDP, conntrack, forwarding
        _m("udp_rcvbuf_errors_per_second", "per_second", "UDP receive-buffer errors (v4+v6)"),
        _m("udp_sndbuf_errors_per_second", "per_second", "UDP send-buffer errors (v4+v6)"),
        _m("udp_in_errors_per_second", "per_second", "UDP input errors (v4+v6)"),
        _m("conntrack_entries", "count", "Connection-tracking entries", user_traffic=True),
        _m("conntrack_max", "count", "Connection-tracking table size"),
        _m(
            "conntrack_used_percent",
            "percent",
            "Connection-tracking table fill",
            user_traffic=True,
        ),
        _m("ip_forwarding", "bool", "IP forwarding enabled", "family"),
        # VPN service
        _m("vpn_process_up", "bool", "The VPN daemon is running (1) or not (0)", "process"),
        _m("vpn_process_cpu_percent", "percent", "VPN daemon CPU use (% of one core)", "process"),
        _m("vpn_process_rss_bytes", "bytes", "VPN daemon resident memory", "process"),
        _m(
            "vpn_process_restarts",
            "count",
            "VPN daemon restarts seen since the agent started",
            "process",
            kind="counter",
        ),
        _m("vpn_port_listening", "bool", "The VPN service's local port is listening", "port"),
        _m("vpn_active_peers", "count", "Active VPN peers (aggregate)", "source", coarsen=True),
        _m("cert_days_left", "days", "Days until the certificate expires", "cert"),
        _m("clock_synchronized", "bool", "Kernel clock is synchronised (NTP)"),
        _m("clock_max_error_seconds", "seconds", "Kernel's maximum clock error estimate"),
        _m("uptime_seconds", "seconds", "Time since boot"),
        # The agent itself
        _m("agent_buffer_bytes", "bytes", "Memory held by the agent's ring buffer"),
        _m("agent_outbox_events", "count", "Alert events waiting for the server's ack"),
        _m(
            "agent_privacy_refusals",
            "count",
            "Values refused by the privacy gate since start",
            kind="counter",
        ),
        _m("agent_collector_up", "bool", "Collector read its source this cycle", "collector"),
        _m("agent_cycle_seconds", "seconds", "Wall time the last collection took"),
    )
}


def is_known(metric: str) -> bool:
    return metric in METRICS
