"""The standard set of collectors for a VPN node, built from the agent's configuration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.collectors.certs import CertCollector
from agent.collectors.clock import ClockCollector
from agent.collectors.cpu import CpuCollector
from agent.collectors.disk import DiskCollector
from agent.collectors.fds import FdCollector
from agent.collectors.memory import MemoryCollector
from agent.collectors.netstack import ConntrackCollector, ForwardingCollector, UdpCollector
from agent.collectors.network import DEFAULT_SESSION_PREFIXES, NetworkCollector
from agent.collectors.ports import PortCollector
from agent.collectors.processes import ProcessCollector
from agent.collectors.wireguard import WireguardCollector, find_wg, wg_runner
from agent.samples import Collector


def default_collectors(
    vpn_processes: Sequence[str] = (),
    vpn_interfaces: Sequence[str] = (),
    vpn_ports: Sequence[tuple[str, int]] = (),
    cert_files: Sequence[Path] = (),
    *,
    session_prefixes: Sequence[str] = DEFAULT_SESSION_PREFIXES,
    proc_root: Path = Path("/proc"),
    sys_root: Path = Path("/sys"),
) -> list[Collector]:
    """Every collector, reading the real host.

    ``vpn_processes`` empty means auto (the known daemons, reported once seen). The port
    collector is included only with ``vpn_ports``, the certificate collector only with
    ``cert_files``, and the WireGuard collector when the ``wg`` tool is installed or a
    configured interface is a WireGuard one (``wg*``; then a missing tool is reported).
    Raises ValueError for a port or interface name that cannot be used.
    """
    collectors: list[Collector] = [
        CpuCollector(proc_root=proc_root),
        MemoryCollector(proc_root=proc_root),
        DiskCollector(proc_root=proc_root),
        FdCollector(proc_root=proc_root),
        NetworkCollector(
            vpn_interfaces=vpn_interfaces,
            session_prefixes=session_prefixes,
            proc_root=proc_root,
            sys_root=sys_root,
        ),
        UdpCollector(proc_root=proc_root),
        ConntrackCollector(proc_root=proc_root),
        ForwardingCollector(proc_root=proc_root),
        ProcessCollector(vpn_processes=vpn_processes, proc_root=proc_root),
        ClockCollector(),
    ]
    if vpn_ports:
        collectors.append(PortCollector(vpn_ports=vpn_ports, proc_root=proc_root))
    wg = find_wg()
    if wg is not None or any(i.startswith("wg") for i in vpn_interfaces):
        collectors.append(WireguardCollector(run_wg=wg_runner(wg) if wg else None))
    if cert_files:
        collectors.append(CertCollector(cert_files=cert_files))
    return collectors
