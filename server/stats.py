"""The server's own counters and gauges, exposed at /metrics as Prometheus text.

Only operational figures (frames handled, connections, HTTP statuses); never anything about a
node's monitored values or a person.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

_NAME = re.compile(r"[a-z_][a-z0-9_]*")
PREFIX = "oneconnect_server_"


class Stats:
    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._help: dict[str, str] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def inc(self, name: str, amount: float = 1.0, help: str = "", **labels: str) -> None:
        assert _NAME.fullmatch(name), name
        key = tuple(sorted(labels.items()))
        series = self._counters[name]
        series[key] = series.get(key, 0.0) + amount
        if help and name not in self._help:
            self._help[name] = help

    def counter(self, name: str, help: str, **labels: str) -> Counter:
        """One series of a counter, for a hot path: ``add`` is one dict update."""
        self.inc(name, 0.0, help, **labels)
        return Counter(self._counters[name], tuple(sorted(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        assert _NAME.fullmatch(name), name
        self._gauges[name] = (help, read)

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._counters):
            full = f"{PREFIX}{name}_total"
            lines.append(f"# HELP {full} {self._help.get(name, name)}")
            lines.append(f"# TYPE {full} counter")
            for labels, value in sorted(self._counters[name].items()):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{full}{{{text}}} {value!r}" if text else f"{full} {value!r}")
        for name in sorted(self._gauges):
            help_text, read = self._gauges[name]
            full = PREFIX + name
            lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} gauge")
            lines.append(f"{full} {float(read())!r}")
        return "\n".join(lines) + "\n"


class Counter:
    """A counter series bound once (see :meth:`Stats.counter`)."""

    __slots__ = ("_key", "_series")

    def __init__(
        self, series: dict[tuple[tuple[str, str], ...], float], key: tuple[tuple[str, str], ...]
    ):
        self._series = series
        self._key = key

    def add(self, amount: float = 1.0) -> None:
        self._series[self._key] += amount


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
