from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple, NoReturn

import pytest

from agent.collectors.disk import DiskCollector, DiskIoCounters, is_partition, parse_diskstats
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


def test_diskstats_parsed_as_psutil_reads_it() -> None:
    got = parse_diskstats((PROC / "diskstats").read_bytes())
    assert got["vda"] == DiskIoCounters(3854802 * 512, 2837856 * 512, 12992)
    assert got["nvme0n1"] == DiskIoCounters(4000 * 512, 8000 * 512, 300)  # 14 fields: 4.17
    assert got["sdb1"] == DiskIoCounters(20 * 512, 40 * 512, 0)  # a 2.6 partition line
    assert set(got) == {"loop0", "vda", "vda1", "nvme0n1", "nvme0n1p1", "sdb1", "zram0"}
    with pytest.raises(ValueError, match="unexpected"):
        parse_diskstats(b"   8 0 sda 1 2 3\n")


def test_io_default_source_reads_proc_root(tmp_path: Path) -> None:
    proc = copy_tree(tmp_path, "proc")
    d = DiskCollector(disk_partitions=lambda: [], statvfs=statvfs, proc_root=proc)
    assert d.collect(1.0) == []
    diskstats = proc / "diskstats"
    # vda: +1000 sectors read, busy +100 ms; loop0, vda1 and zram0 are not counted.
    text = diskstats.read_text()
    text = text.replace(" 3854802 ", " 3855802 ").replace(" 12992 ", " 13092 ")
    diskstats.write_text(text.replace("loop0 100 0 200", "loop0 100 0 9200"))
    assert plain(d.collect(2.0)) == {
        "disk_read_bytes_per_second": 512000.0,
        "disk_write_bytes_per_second": 0.0,
        "disk_busy_percent": 10.0,
    }
    diskstats.unlink()
    assert d.collect(3.0) == []
    assert d.problems() == ("disk I/O counters unreadable (missing)",)


def test_io_disks_reclassified_when_devices_change() -> None:
    readings = iter(
        [
            {"sda": Io(0, 0, 0)},
            {"sda": Io(1000, 0, 0)},
            {"sda": Io(2000, 0, 0), "sdb": Io(0, 0, 0), "sdb1": Io(0, 0, 0)},
            {"sda": Io(3000, 0, 0), "sdb": Io(4000, 0, 0), "sdb1": Io(4000, 0, 0)},
        ]
    )
    d = DiskCollector(
        disk_partitions=lambda: [], statvfs=statvfs, disk_io_counters=lambda: next(readings)
    )
    d.collect(1.0)
    assert plain(d.collect(2.0))["disk_read_bytes_per_second"] == 1000.0
    assert plain(d.collect(3.0))["disk_read_bytes_per_second"] == 1000.0  # sdb: no delta yet
    assert plain(d.collect(4.0))["disk_read_bytes_per_second"] == 5000.0  # sdb1 not counted


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
