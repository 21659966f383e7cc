"""Shared helpers for the collector tests: fixture trees, sample lookups, label checks."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from agent.metrics import LABELS, METRICS
from agent.samples import Sample

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PROC = FIXTURES / "proc"
SYS = FIXTURES / "sys"

NET_DEV_HEADER = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs "
    "drop fifo colls carrier compressed\n"
)


def copy_tree(tmp_path: Path, name: str) -> Path:
    """A writable copy of a fixture tree ("proc" or "sys"), for tests that change values."""
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name, dest)
    return dest


def net_dev(rows: dict[str, tuple[int, int, int, int, int, int]]) -> str:
    """/proc/net/dev text; each row is (rx bytes, rx errs, rx drop, tx bytes, tx errs, tx drop)."""
    out = NET_DEV_HEADER
    for name, (rx, rxe, rxd, tx, txe, txd) in rows.items():
        out += (
            f"{name:>6}: {rx:8d}       1 {rxe:4d} {rxd:4d}    0     0          0         0 "
            f"{tx:8d}       1 {txe:4d} {txd:4d}    0     0       0          0\n"
        )
    return out


def values(samples: Iterable[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(metric, labels): value}, failing on a duplicate series."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for s in samples:
        key = (s.metric, s.labels)
        assert key not in out, f"duplicate series {key}"
        out[key] = s.value
    return out


def plain(samples: Iterable[Sample]) -> dict[str, float]:
    """{metric: value} for unlabelled samples."""
    return {s.metric: s.value for s in samples if not s.labels}


def by_label(samples: Iterable[Sample], metric: str, label: str) -> dict[str, float]:
    """{label value: value} for one labelled metric."""
    return {dict(s.labels)[label]: s.value for s in samples if s.metric == metric}


def assert_valid(samples: Sequence[Sample]) -> None:
    """Every metric is in the table, with its label names, and every label value is allowed."""
    for s in samples:
        assert s.metric in METRICS, s.metric
        definition = METRICS[s.metric]
        assert tuple(sorted(definition.labels)) == tuple(k for k, _ in s.labels), s
        for key, value in s.labels:
            assert LABELS[key].allows(value), (s.metric, key, value)
        assert s.value == s.value, s  # not NaN


def add_process(
    proc: Path,
    pid: int,
    comm: str,
    *,
    utime: int = 0,
    stime: int = 0,
    start: int = 1,
    rss: int = 0,
    state: str = "S",
) -> None:
    """Write /proc/<pid>/comm and /proc/<pid>/stat into a fake proc tree."""
    fields = [state, "1", str(pid), str(pid), "0", "-1", "4194560", "100", "0", "0", "0"]
    fields += [str(utime), str(stime), "0", "0", "20", "0", "1", "0", str(start), "123456789"]
    fields += [str(rss)] + ["0"] * 30
    (proc / str(pid)).mkdir(exist_ok=True)
    (proc / str(pid) / "comm").write_text(comm + "\n")
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")


def remove_process(proc: Path, pid: int) -> None:
    shutil.rmtree(proc / str(pid))
