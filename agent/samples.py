"""Typed samples and the one protocol every collector follows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

Labels = tuple[tuple[str, str], ...]
"""Label pairs, sorted by name, so that equal label sets compare and hash equal."""


def labels(**pairs: str) -> Labels:
    """Build a sorted label tuple: ``labels(mount="/")``."""
    return tuple(sorted(pairs.items()))


class Sample(NamedTuple):
    """One reading of one series: a metric name, its labels and a float value."""

    metric: str
    value: float
    labels: Labels = ()

    @property
    def series(self) -> SeriesKey:
        return SeriesKey(self.metric, self.labels)


class SeriesKey(NamedTuple):
    metric: str
    labels: Labels


class SourceUnavailable(Exception):
    """A collector's source cannot be read (missing module, no permission, not Linux...).

    The collector's signals become absent; the runner logs the reason once and carries on.
    """


class Collector(Protocol):
    """A signal family. ``collect`` returns this cycle's samples or raises SourceUnavailable.

    Collectors take their sources (psutil functions, a /proc root, a clock) as constructor
    parameters so that tests feed recorded fixtures. Counters become rates inside the collector,
    which keeps the previous reading; the first call after start may return no rate samples.
    """

    name: str

    def collect(self, now: float) -> Sequence[Sample]: ...
