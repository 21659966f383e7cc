from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.collectors.netstack import ConntrackCollector
from agent.collectors.runner import CollectorRunner, scrub
from agent.samples import Sample, SourceUnavailable, labels

from .collector_testkit import copy_tree, values

LOG = logging.getLogger("test.collectors")


class Flaky:
    """A collector whose behaviour the test sets per cycle."""

    name = "flaky"

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.reasons: list[str] = []

    def collect(self, now: float) -> Sequence[Sample]:
        if self.error is not None:
            raise self.error
        return [Sample("load1", 1.0)]

    def problems(self) -> Sequence[str]:
        return list(self.reasons)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_conntrack_absent_logs_one_line_then_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = tmp_path / "proc"
    runner = CollectorRunner([ConntrackCollector(proc_root=proc)], LOG)
    with caplog.at_level(logging.INFO):
        for now in range(5):
            assert runner.run(float(now)) == [
                Sample("agent_collector_up", 0.0, labels(collector="conntrack"))
            ]
        assert messages(caplog) == [
            f"collector conntrack unavailable: conntrack module not loaded "
            f"({proc}/sys/net/netfilter/nf_conntrack_count missing); its signals are absent"
        ]
        caplog.clear()
        copy_tree(tmp_path / "x", "proc").rename(proc)
        got = values(runner.run(6.0))
        assert got[("agent_collector_up", labels(collector="conntrack"))] == 1.0
        assert got[("conntrack_entries", ())] == 1234.0
        runner.run(7.0)
        assert messages(caplog) == ["collector conntrack recovered; its signals are back"]


def test_reason_change_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky()
    runner = CollectorRunner([flaky], LOG)
    with caplog.at_level(logging.INFO):
        flaky.error = SourceUnavailable("first reason")
        runner.run(1.0)
        runner.run(2.0)
        flaky.error = SourceUnavailable("second reason")
        runner.run(3.0)
        runner.run(4.0)
    assert messages(caplog) == [
        "collector flaky unavailable: first reason; its signals are absent",
        "collector flaky unavailable: second reason; its signals are absent",
    ]


def test_unexpected_exception_is_contained_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky()
    flaky.error = PermissionError(13, "Permission denied")
    healthy = ConntrackCollector(proc_root=Path("/nonexistent"))
    runner = CollectorRunner([flaky, healthy], LOG)
    with caplog.at_level(logging.INFO):
        for now in (1.0, 2.0, 3.0):
            got = values(runner.run(now))
            assert got[("agent_collector_up", labels(collector="flaky"))] == 0.0
            assert got[("agent_collector_up", labels(collector="conntrack"))] == 0.0
    flaky_lines = [m for m in messages(caplog) if "flaky" in m]
    assert flaky_lines == [
        "collector flaky failed unexpectedly (a bug): PermissionError: [Errno 13] "
        "Permission denied; its signals are absent"
    ]
    assert [r.levelno for r in caplog.records if "flaky" in r.getMessage()] == [logging.ERROR]


def test_per_item_problems_logged_once_per_new_reason(caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky()
    runner = CollectorRunner([flaky], LOG)
    with caplog.at_level(logging.INFO):
        flaky.reasons = ["cert a.pem: file not found"]
        for now in (1.0, 2.0, 3.0):
            runner.run(now)
        flaky.reasons = ["cert a.pem: file not found", "cert b.pem: file not found"]
        runner.run(4.0)
        runner.run(5.0)
        flaky.reasons = ["cert b.pem: file not found"]
        runner.run(6.0)
        runner.run(7.0)
    assert messages(caplog) == [
        "collector flaky: cert a.pem: file not found",
        "collector flaky: cert b.pem: file not found",
        "collector flaky: resolved: cert a.pem: file not found",
    ]


def test_log_lines_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky()
    flaky.error = SourceUnavailable(
        "peer 10.8.0.6 key xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg= at fe80::1 "
        "file /home/alice/x.pem and 2001:db8:0:0:0:0:0:42"
    )
    with caplog.at_level(logging.INFO):
        CollectorRunner([flaky], LOG).run(1.0)
    (line,) = messages(caplog)
    for secret in ("10.8.0.6", "xTIBA5", "fe80", "/home", "alice", "2001:db8"):
        assert secret not in line
    assert scrub("conntrack module not loaded (/proc/sys/net/netfilter/x missing)") == (
        "conntrack module not loaded (/proc/sys/net/netfilter/x missing)"
    )
