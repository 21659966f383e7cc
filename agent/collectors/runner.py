"""Runs every collector once per cycle; turns unavailability into one log line, not a crash.

A collector that raises SourceUnavailable (or, a bug, any other exception) contributes no
samples that cycle and ``agent_collector_up{collector}`` 0. The runner logs one line when a
collector becomes unavailable or its reason changes, one when it recovers, and nothing while the
reason stays the same. Collectors with a ``problems()`` method report per-item reasons (one
certificate unreadable, one mount skipped); each new reason is logged once, and once more when
it clears. Log lines are scrubbed of anything that looks like an address, key or home path.

Whether a collector has ``problems()`` is decided once, when the runner is built (a runtime
Protocol check costs tens of microseconds a call), and a cycle whose reasons are the same as the
last cycle's is not scrubbed again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from agent.samples import Collector, Labels, Sample, SourceUnavailable, labels


@runtime_checkable
class ReportsProblems(Protocol):
    def problems(self) -> Sequence[str]:
        """This cycle's human-readable reasons why parts of the source are absent."""
        ...


_SCRUB = re.compile(
    r"\b(?:\d{1,3}\.){3}\d{1,3}\b"  # IPv4
    r"|\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}\b"  # IPv6 (and MACs)
    r"|[0-9A-Fa-f]{1,4}::[0-9A-Fa-f:]*"  # IPv6 with ::
    r"|(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{42,}={1,2}"  # base64 keys (WireGuard: 43 + "=")
    r"|/(?:home|Users|run/user)/\S*"  # paths naming a person
)


def scrub(text: str) -> str:
    """``text`` with addresses, keys and home paths replaced by "<redacted>"."""
    return _SCRUB.sub("<redacted>", text)


class CollectorRunner:
    """Calls each collector; returns all samples plus agent_collector_up for each."""

    def __init__(self, collectors: Sequence[Collector], log: logging.Logger) -> None:
        self._collectors = list(collectors)
        self._log = log
        self._plan: list[tuple[Collector, Labels, Callable[[], Sequence[str]] | None]] = [
            (
                c,
                labels(collector=c.name),
                c.problems if isinstance(c, ReportsProblems) else None,
            )
            for c in self._collectors
        ]
        self._down: dict[str, str] = {}
        self._problems: dict[str, frozenset[str]] = {}
        self._raw_problems: dict[str, tuple[str, ...]] = {}

    @property
    def collectors(self) -> Sequence[Collector]:
        return tuple(self._collectors)

    def run(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        for collector, up_labels, problems in self._plan:
            name = collector.name
            try:
                samples = collector.collect(now)
            except SourceUnavailable as exc:
                self._unavailable(name, str(exc) or "source unavailable", bug=False)
                up = 0.0
            except Exception as exc:  # a bug: keep the agent running, say so once
                self._unavailable(name, f"{type(exc).__name__}: {exc}", bug=True)
                up = 0.0
            else:
                out.extend(samples)
                up = 1.0
                if self._down.pop(name, None) is not None:
                    self._log.info("collector %s recovered; its signals are back", name)
                if problems is not None:
                    self._report_problems(name, problems())
            out.append(Sample("agent_collector_up", up, up_labels))
        return out

    def _unavailable(self, name: str, reason: str, *, bug: bool) -> None:
        reason = scrub(reason)
        if self._down.get(name) == reason:
            return
        self._down[name] = reason
        if bug:
            self._log.error(
                "collector %s failed unexpectedly (a bug): %s; its signals are absent",
                name,
                reason,
            )
        else:
            self._log.warning("collector %s unavailable: %s; its signals are absent", name, reason)

    def _report_problems(self, name: str, reasons: Sequence[str]) -> None:
        raw = tuple(reasons)
        if raw == self._raw_problems.get(name, ()):
            return  # the same reasons as last cycle: nothing to scrub or log
        self._raw_problems[name] = raw
        current = frozenset(scrub(p) for p in raw)
        before = self._problems.get(name, frozenset())
        if current == before:
            return
        for reason in sorted(current - before):
            self._log.warning("collector %s: %s", name, reason)
        for reason in sorted(before - current):
            self._log.info("collector %s: resolved: %s", name, reason)
        self._problems[name] = current
