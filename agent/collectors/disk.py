"""Space and inodes per real mount (statvfs), and I/O rates summed over physical disks.

The mount table is re-read every ``PARTITIONS_REFRESH_SECONDS``; disk I/O counters are read from
/proc/diskstats each cycle, and which of its devices are physical disks is worked out again only
when the set of device names changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import psutil

from agent.collectors.counters import CounterDeltas
from agent.collectors.sources import SOURCE_ERRORS, describe, read_bytes
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
SECTOR_BYTES = 512
"""/proc/diskstats counts 512-byte sectors whatever the device's sector size."""
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


class DiskIoCounters(NamedTuple):
    read_bytes: int
    write_bytes: int
    busy_time: int  # milliseconds spent doing I/O


def parse_diskstats(data: bytes) -> dict[str, DiskIoCounters]:
    """Per-device counters from /proc/diskstats, as ``psutil.disk_io_counters(perdisk=True)``
    reads them (without its wrap-around correction: a counter that goes back is a reset here).

    Lines are ``major minor name`` and 11 fields (or more since Linux 4.18); a 2.6 kernel's
    partition lines have 4 fields and no busy time.
    """
    out: dict[str, DiskIoCounters] = {}
    for line in data.split(b"\n"):
        f = line.split()
        n = len(f)
        if n >= 14:
            out[f[2].decode("ascii", "replace")] = DiskIoCounters(
                int(f[5]) * SECTOR_BYTES, int(f[9]) * SECTOR_BYTES, int(f[12])
            )
        elif n == 7:
            out[f[2].decode("ascii", "replace")] = DiskIoCounters(
                int(f[4]) * SECTOR_BYTES, int(f[6]) * SECTOR_BYTES, 0
            )
        elif n:
            raise ValueError("unexpected /proc/diskstats line")
    return out


def _partitions() -> Sequence[Partition]:
    return psutil.disk_partitions(all=False)


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
    and disk_busy_percent over physical disks.

    The mount list is cached for ``PARTITIONS_REFRESH_SECONDS`` of ``now``; space is statvfs'd
    each cycle. ``disk_io_counters`` defaults to reading ``<proc_root>/diskstats``.
    """

    name = "disk"

    def __init__(
        self,
        *,
        disk_partitions: Callable[[], Sequence[Partition]] = _partitions,
        statvfs: Callable[[str], StatVfs] = os.statvfs,
        disk_io_counters: Callable[[], Mapping[str, DiskIo]] | None = None,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self._disk_partitions = disk_partitions
        self._statvfs = statvfs
        if disk_io_counters is None:
            diskstats = str(proc_root / "diskstats")

            def read_diskstats() -> Mapping[str, DiskIo]:
                return parse_diskstats(read_bytes(diskstats))

            disk_io_counters = read_diskstats
        self._disk_io_counters = disk_io_counters
        self._device_names: frozenset[str] | None = None
        self._physical: tuple[str, ...] = ()
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
        if self._device_names is None or counters.keys() != self._device_names:
            names = frozenset(counters)
            self._device_names = names
            self._physical = tuple(
                name
                for name in counters
                if not name.startswith(VIRTUAL_DISKS) and not is_partition(name, names)
            )
        reading: dict[tuple[str, str], float] = {}
        for name in self._physical:
            c = counters[name]
            reading[(name, "r")] = c.read_bytes
            reading[(name, "w")] = c.write_bytes
            reading[(name, "busy")] = c.busy_time
        result = self._deltas.update(now, reading)
        if result is None or not reading:
            return True
        elapsed, d = result
        if not d:  # every disk's counters went back (reset): no rate this cycle
            return True
        read = write = busy_ms = 0.0
        for (_, kind), v in d.items():
            if kind == "r":
                read += v
            elif kind == "w":
                write += v
            elif v > busy_ms:
                busy_ms = v
        out.append(Sample("disk_read_bytes_per_second", read / elapsed))
        out.append(Sample("disk_write_bytes_per_second", write / elapsed))
        out.append(Sample("disk_busy_percent", min(100.0, busy_ms / (elapsed * 1000.0) * 100.0)))
        return True
