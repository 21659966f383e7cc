"""Space and inodes per real mount (statvfs), and I/O rates summed over physical disks."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import psutil

from agent.collectors.counters import CounterDeltas
from agent.collectors.sources import SOURCE_ERRORS, describe
from agent.metrics import LABELS
from agent.samples import Sample, SourceUnavailable, labels

PSEUDO_FS = frozenset(
    {
        "tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "devpts", "mqueue",
        "debugfs", "tracefs", "securityfs", "pstore", "bpf", "autofs", "configfs", "fusectl",
        "hugetlbfs", "binfmt_misc", "rpc_pipefs", "nsfs", "ramfs", "efivarfs", "selinuxfs",
        "iso9660", "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs",
    }
)  # fmt: skip
"""Not local storage (network file systems are left out too: statvfs on them can hang)."""

VIRTUAL_DISKS = ("loop", "ram", "zram", "dm-", "md", "sr", "fd")
"""Block devices whose I/O is not a physical disk's, or is already counted on one."""

PARTITIONS_REFRESH_SECONDS = 30.0
_MOUNT_LABEL = LABELS["mount"]


class Partition(Protocol):
    @property
    def device(self) -> str: ...
    @property
    def mountpoint(self) -> str: ...
    @property
    def fstype(self) -> str: ...


class StatVfs(Protocol):
    @property
    def f_frsize(self) -> int: ...
    @property
    def f_blocks(self) -> int: ...
    @property
    def f_bfree(self) -> int: ...
    @property
    def f_bavail(self) -> int: ...
    @property
    def f_files(self) -> int: ...
    @property
    def f_ffree(self) -> int: ...


class DiskIo(Protocol):
    @property
    def read_bytes(self) -> int: ...
    @property
    def write_bytes(self) -> int: ...
    @property
    def busy_time(self) -> int: ...


def _partitions() -> Sequence[Partition]:
    return psutil.disk_partitions(all=False)


def _disk_io() -> Mapping[str, DiskIo]:
    return psutil.disk_io_counters(perdisk=True) or {}


def is_partition(name: str, names: set[str] | frozenset[str]) -> bool:
    """sda1 of sda, nvme0n1p1 of nvme0n1, mmcblk0p2 of mmcblk0 (kernel partition naming)."""
    stem = name.rstrip("0123456789")
    if not stem or stem == name:
        return False
    if stem.endswith("p") and stem[-2:-1].isdigit() and stem[:-1] in names:
        return True
    return not stem[-1].isdigit() and stem in names


def select_mounts(parts: Sequence[Partition]) -> tuple[list[str], int]:
    """Mount points to report, one per device (the shortest: bind mounts repeat a device), and
    how many were left out because their path may not be sent as a label (e.g. under /home)."""
    best: dict[str, str] = {}
    for p in parts:
        if p.fstype in PSEUDO_FS or p.fstype.startswith(("cgroup", "fuse")):
            continue
        current = best.get(p.device)
        if current is None or len(p.mountpoint) < len(current):
            best[p.device] = p.mountpoint
    mounts = sorted(best.values())
    allowed = [m for m in mounts if _MOUNT_LABEL.allows(m)]
    return allowed, len(mounts) - len(allowed)


class DiskCollector:
    """disk_used_percent/free_bytes/inodes_used_percent{mount}; disk_read/write_bytes_per_second
    and disk_busy_percent over physical disks."""

    name = "disk"

    def __init__(
        self,
        *,
        disk_partitions: Callable[[], Sequence[Partition]] = _partitions,
        statvfs: Callable[[str], StatVfs] = os.statvfs,
        disk_io_counters: Callable[[], Mapping[str, DiskIo]] = _disk_io,
    ) -> None:
        self._disk_partitions = disk_partitions
        self._statvfs = statvfs
        self._disk_io_counters = disk_io_counters
        self._mounts: list[str] = []
        self._skipped = 0
        self._mounts_at: float | None = None
        self._deltas: CounterDeltas[tuple[str, str]] = CounterDeltas()
        self._problems: tuple[str, ...] = ()

    def problems(self) -> Sequence[str]:
        return self._problems

    def collect(self, now: float) -> Sequence[Sample]:
        out: list[Sample] = []
        problems: list[str] = []
        space_ok = self._space(now, out, problems)
        io_ok = self._io(now, out, problems)
        if not space_ok and not io_ok:
            raise SourceUnavailable("; ".join(problems))
        self._problems = tuple(problems)
        return out

    def _space(self, now: float, out: list[Sample], problems: list[str]) -> bool:
        if self._mounts_at is None or now - self._mounts_at >= PARTITIONS_REFRESH_SECONDS:
            try:
                self._mounts, self._skipped = select_mounts(self._disk_partitions())
            except SOURCE_ERRORS as exc:
                self._mounts_at = None
                problems.append(f"mount table unreadable ({describe(exc)})")
                return False
            self._mounts_at = now
        if self._skipped:
            problems.append(
                f"{self._skipped} mount(s) not reported: their path may not be sent as a label"
            )
        failed = 0
        for mount in self._mounts:
            try:
                st = self._statvfs(mount)
            except SOURCE_ERRORS as exc:
                failed += 1
                problems.append(f"statvfs failed on mount {mount} ({describe(exc)})")
                continue
            mount_label = labels(mount=mount)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            avail = st.f_bavail * st.f_frsize
            if used + avail > 0:
                out.append(Sample("disk_used_percent", used / (used + avail) * 100.0, mount_label))
            out.append(Sample("disk_free_bytes", float(avail), mount_label))
            if st.f_files > 0:
                inodes = (st.f_files - st.f_ffree) / st.f_files * 100.0
                out.append(Sample("disk_inodes_used_percent", inodes, mount_label))
        return failed == 0 or failed < len(self._mounts)

    def _io(self, now: float, out: list[Sample], problems: list[str]) -> bool:
        try:
            counters = self._disk_io_counters()
        except SOURCE_ERRORS as exc:
            self._deltas.reset()
            problems.append(f"disk I/O counters unreadable ({describe(exc)})")
            return False
        names = frozenset(counters)
        reading: dict[tuple[str, str], float] = {}
        for name, c in counters.items():
            if name.startswith(VIRTUAL_DISKS) or is_partition(name, names):
                continue
            reading[(name, "r")] = c.read_bytes
            reading[(name, "w")] = c.write_bytes
            reading[(name, "busy")] = c.busy_time
        result = self._deltas.update(now, reading)
        if result is None or not reading:
            return True
        elapsed, d = result
        if not d:  # every disk's counters went back (reset): no rate this cycle
            return True
        read = sum(v for (_, kind), v in d.items() if kind == "r")
        write = sum(v for (_, kind), v in d.items() if kind == "w")
        busy_ms = max((v for (_, kind), v in d.items() if kind == "busy"), default=0.0)
        out.append(Sample("disk_read_bytes_per_second", read / elapsed))
        out.append(Sample("disk_write_bytes_per_second", write / elapsed))
        out.append(Sample("disk_busy_percent", min(100.0, busy_ms / (elapsed * 1000.0) * 100.0)))
        return True
