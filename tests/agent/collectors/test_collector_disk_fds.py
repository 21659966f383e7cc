from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple, NoReturn

import pytest

from agent.collectors.disk import DiskCollector, is_partition
from agent.collectors.fds import FdCollector
from agent.samples import SourceUnavailable

from .collector_testkit import PROC, assert_valid, by_label, copy_tree, plain


class Part(NamedTuple):
    device: str
    mountpoint: str
    fstype: str


class Vfs(NamedTuple):
    f_frsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int


class Io(NamedTuple):
    read_bytes: int
    write_bytes: int
    busy_time: int


PARTS = [
    Part("/dev/vda1", "/", "ext4"),
    Part("/dev/vda1", "/etc/hosts", "ext4"),  # a bind mount of the same device
    Part("tmpfs", "/run", "tmpfs"),
    Part("overlay", "/var/lib/docker/overlay2/x/merged", "overlay"),
    Part("/dev/loop0", "/snap/core/1", "squashfs"),
    Part("/dev/vdb", "/home", "ext4"),  # may not be sent as a label
    Part("/dev/vdc", "/srv/data", "btrfs"),
]
VFS = {
    # 1000 blocks of 4 KiB: 600 used (1000 - 400 free), 300 available to users
    "/": Vfs(4096, 1000, 400, 300, 100, 25),
    "/srv/data": Vfs(1024, 2000, 1000, 1000, 0, 0),  # btrfs: no inode figures
}


def statvfs(path: str) -> Vfs:
    return VFS[path]


def no_io() -> Mapping[str, Io]:
    return {}


def fail(exc: Exception) -> Callable[..., NoReturn]:
    def raise_it(*args: object) -> NoReturn:
        raise exc

    return raise_it


def test_space_per_real_mount_deduplicated() -> None:
    d = DiskCollector(disk_partitions=lambda: PARTS, statvfs=statvfs, disk_io_counters=no_io)
    samples = d.collect(1.0)
    assert_valid(samples)
    assert by_label(samples, "disk_used_percent", "mount") == {
        "/": pytest.approx(600 / 900 * 100),
        "/srv/data": 50.0,
    }
    assert by_label(samples, "disk_free_bytes", "mount") == {
        "/": 300.0 * 4096,
        "/srv/data": 1000.0 * 1024,
    }
    assert by_label(samples, "disk_inodes_used_percent", "mount") == {"/": 75.0}
    assert d.problems() == ("1 mount(s) not reported: their path may not be sent as a label",)


def test_statvfs_failure_on_one_mount_keeps_the_others() -> None:
    def statvfs_denied_on_srv(path: str) -> Vfs:
        if path == "/srv/data":
            raise PermissionError(13, "Permission denied", path)
        return VFS[path]

    d = DiskCollector(
        disk_partitions=lambda: PARTS, statvfs=statvfs_denied_on_srv, disk_io_counters=no_io
    )
    samples = d.collect(1.0)
    assert set(by_label(samples, "disk_free_bytes", "mount")) == {"/"}
    assert "statvfs failed on mount /srv/data (permission denied)" in d.problems()


def test_io_rates_over_physical_disks_only() -> None:
    readings = iter(
        [
            {
                "sda": Io(1000, 2000, 100),
                "sda1": Io(1000, 2000, 100),
                "nvme0n1": Io(0, 0, 0),
                "nvme0n1p1": Io(0, 0, 0),
                "loop0": Io(0, 0, 0),
                "dm-0": Io(0, 0, 0),
            },
            {
                "sda": Io(5000, 2000, 600),  # +4000 read, busy +500 ms
                "sda1": Io(5000, 2000, 600),
                "nvme0n1": Io(1000, 8000, 1500),  # +1000 read, +8000 write, busy +1500 ms
                "nvme0n1p1": Io(1000, 8000, 1500),
                "loop0": Io(9999, 9999, 9999),
                "dm-0": Io(9999, 9999, 9999),
            },
        ]
    )
    d = DiskCollector(
        disk_partitions=lambda: [], statvfs=statvfs, disk_io_counters=lambda: next(readings)
    )
    assert d.collect(10.0) == []
    got = plain(d.collect(12.0))
    assert got == {
        "disk_read_bytes_per_second": 2500.0,
        "disk_write_bytes_per_second": 4000.0,
        "disk_busy_percent": 75.0,  # the busiest disk: 1500 ms of 2000
    }


def test_io_counter_reset_gives_no_negative_rate() -> None:
    readings = iter([{"sda": Io(5000, 5000, 500)}, {"sda": Io(10, 10, 10)}])
    d = DiskCollector(
        disk_partitions=lambda: [], statvfs=statvfs, disk_io_counters=lambda: next(readings)
    )
    d.collect(1.0)
    assert d.collect(2.0) == []


def test_disk_sources_unreadable() -> None:
    d = DiskCollector(
        disk_partitions=lambda: PARTS, statvfs=statvfs, disk_io_counters=fail(PermissionError())
    )
    assert by_label(d.collect(1.0), "disk_free_bytes", "mount")
    assert "disk I/O counters unreadable (permission denied)" in d.problems()
    both = DiskCollector(
        disk_partitions=fail(FileNotFoundError()),
        statvfs=statvfs,
        disk_io_counters=fail(PermissionError()),
    )
    with pytest.raises(SourceUnavailable, match="mount table unreadable"):
        both.collect(1.0)


def test_is_partition() -> None:
    names = frozenset(
        {"sda", "sda1", "sdaa", "nvme0n1", "nvme0n1p1", "mmcblk0", "mmcblk0p2", "xvda"}
    )
    assert is_partition("sda1", names)
    assert is_partition("nvme0n1p1", names)
    assert is_partition("mmcblk0p2", names)
    assert not is_partition("sda", names)
    assert not is_partition("sdaa", names)
    assert not is_partition("nvme0n1", names)
    assert not is_partition("xvda", names)


def test_fds_exact() -> None:
    samples = FdCollector(proc_root=PROC).collect(1.0)
    assert_valid(samples)
    assert plain(samples) == {"fd_allocated": 2048.0, "fd_used_percent": 2048 / 1048576 * 100}


def test_fds_huge_file_max(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    (proc / "sys" / "fs" / "file-nr").write_text("9000\t1000\t9223372036854775807\n")
    got = plain(FdCollector(proc_root=proc).collect(1.0))
    assert got["fd_allocated"] == 9000.0
    assert got["fd_used_percent"] == pytest.approx(8000 / 9223372036854775807 * 100)


def test_fds_missing_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable) as info:
        FdCollector(proc_root=tmp_path).collect(1.0)
    assert str(info.value) == f"file handle counts unreadable: {tmp_path}/sys/fs/file-nr missing"
