"""Saved monitoring's records (pure, no database): what the writer hands to the store and what
the store's reads return, plus the in-memory rollup accumulator.

    labels = series_labels({"interface": "eth0"})           # '{"interface":"eth0"}'
    point = Point(account_id, node_id, "net_rx", labels, ts, stored_value("<5"))  # value 4.5
    acc = RollupAccumulator()
    acc.add(point, retention_days=30)
    rollups = acc.closed(now)                               # buckets whose window ended
    rollups = acc.drain()                                   # everything (shutdown)

Every write record carries the ``account_id`` it is written for: the store checks it against
the consent (and the node's or endpoint's owner) inside the write's own transaction.
:mod:`server.storage.monitoring` re-exports every public name here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from agent.protocol import AlertEvent

RESOLUTIONS: Final = (60, 3600)
"""Rollup resolutions in seconds: per minute and per hour."""
_COARSENED: Final = re.compile(r"<([0-9]{1,3})")


def series_labels(labels: Mapping[str, str]) -> str:
    """Canonical JSON of a series' labels (sorted keys, no spaces, UTF-8 kept); "" for none."""
    if not labels:
        return ""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_labels(stored: str) -> dict[str, str]:
    """The labels :func:`series_labels` stored ("" is none)."""
    if not stored:
        return {}
    data = json.loads(stored)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def stored_value(v: float | str) -> float:
    """The number stored for a sample value: a coarsened "<k" is stored as k − 0.5."""
    if isinstance(v, str):
        found = _COARSENED.fullmatch(v)
        if found is None:
            raise ValueError(f"not a coarsened value: {v[:10]!r} (expected '<k')")
        return int(found.group(1)) - 0.5
    return float(v)


@dataclass(frozen=True, slots=True)
class Point:
    """One raw sample of a series."""

    account_id: str
    node_id: str
    metric: str
    labels: str
    """:func:`series_labels` of the sample's labels."""
    ts: float
    value: float
    """:func:`stored_value` of the sample's value."""


@dataclass(frozen=True, slots=True)
class Rollup:
    """min/max/sum/count of one series over ``[bucket, bucket + resolution)``."""

    account_id: str
    node_id: str
    metric: str
    labels: str
    resolution: int
    bucket: float
    min: float
    max: float
    sum: float
    count: int
    retention_days: int


_Key: TypeAlias = tuple[str, str, str, str, int]
"""account_id, node_id, metric, labels, retention_days."""
_Series: TypeAlias = dict[_Key, list[float]]
_Buckets: TypeAlias = dict[float, _Series]
"""bucket start -> series -> [min, max, sum, count]."""


class RollupAccumulator:
    """Per-minute and per-hour rollups of the points added, in memory until their bucket closes.

    ``add`` is on the ingest hot path (once per point), so it only updates the point's minute
    bucket (one dict lookup; the bucket of the previous point's time is kept at hand); a minute
    is folded into its hour when it closes (min of mins, max of maxes, sums added — exact).
    A point arriving for a bucket already returned by :meth:`closed` opens it again; the store
    merges the two parts (:meth:`~server.storage.monitoring.MonitoringStore.write_rollups`).
    """

    __slots__ = ("_hour", "_minute", "_series", "_ts")

    def __init__(self) -> None:
        self._minute: _Buckets = {}
        self._hour: _Buckets = {}
        self._ts = math.nan
        self._series: dict[_Key, list[float]] = {}
        """The minute bucket of time ``_ts``."""

    def __len__(self) -> int:
        """Open buckets (series × resolution; an hour counts once its first minute closed)."""
        return sum(map(len, self._minute.values())) + sum(map(len, self._hour.values()))

    def discard(self, keeps: Callable[[str, str], bool]) -> None:
        """Forget, in every open minute and hour bucket, the series whose (account id, node
        id) ``keeps`` refuses (an opt-out: they must never be written, not after a later
        opt-in either). In place: the minute bucket ``add`` holds at hand stays live."""
        for buckets in (self._minute, self._hour):
            for series in buckets.values():
                for key in [k for k in series if not keeps(k[0], k[1])]:
                    del series[key]

    def add(self, point: Point, retention_days: int) -> None:
        ts = point.ts
        if ts != self._ts:
            start = ts - ts % 60.0
            series = self._minute.get(start)
            if series is None:
                series = self._minute[start] = {}
            self._ts, self._series = ts, series
        v = point.value
        key = (point.account_id, point.node_id, point.metric, point.labels, retention_days)
        acc = self._series.get(key)
        if acc is None:
            self._series[key] = [v, v, v, 1.0]
            return
        if v < acc[0]:
            acc[0] = v
        if v > acc[1]:
            acc[1] = v
        acc[2] += v
        acc[3] += 1.0

    def closed(self, now: float) -> list[Rollup]:
        """Return and forget every bucket whose window ended (``bucket + resolution <= now``)."""
        out: list[Rollup] = []
        for start in sorted(b for b in self._minute if b + 60 <= now):
            self._close_minute(out, start)
        for start in sorted(b for b in self._hour if b + 3600 <= now):
            _emit(out, 3600, start, self._hour.pop(start))
        return out

    def drain(self) -> list[Rollup]:
        """Return and forget every bucket, open or not (shutdown: the store merges the rest of
        a partial bucket written now with what a later process writes)."""
        out: list[Rollup] = []
        for start in sorted(self._minute):
            self._close_minute(out, start)
        for start in sorted(self._hour):
            _emit(out, 3600, start, self._hour.pop(start))
        return out

    def _close_minute(self, out: list[Rollup], start: float) -> None:
        series = self._minute.pop(start)
        self._ts = math.nan  # add() must not write into the popped bucket
        _emit(out, 60, start, series)
        hour_start = start - start % 3600.0
        hour = self._hour.get(hour_start)
        if hour is None:  # the popped minute's accumulators become the hour's
            self._hour[hour_start] = series
            return
        for key, (lo, hi, total, count) in series.items():
            acc = hour.get(key)
            if acc is None:
                hour[key] = [lo, hi, total, count]
                continue
            if lo < acc[0]:
                acc[0] = lo
            if hi > acc[1]:
                acc[1] = hi
            acc[2] += total
            acc[3] += count


def _emit(out: list[Rollup], resolution: int, start: float, buckets: _Series) -> None:
    for (account_id, node_id, metric, labels, days), (lo, hi, total, count) in buckets.items():
        rollup = Rollup(
            account_id, node_id, metric, labels, resolution, start, lo, hi, total, int(count), days
        )
        out.append(rollup)


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert event in alert history."""

    account_id: str
    node_id: str
    event_id: str
    fingerprint: str
    rule: str
    status: str
    severity: str
    metric: str
    labels: dict[str, str]
    value: float | str | None
    threshold: float | None
    summary: str
    started_at: float
    ended_at: float | None
    ts: float
    expires_at: float

    @classmethod
    def of(cls, account_id: str, node_id: str, event: AlertEvent, expires_at: float) -> AlertRow:
        return cls(
            account_id=account_id,
            node_id=node_id,
            event_id=event.id,
            fingerprint=event.fingerprint,
            rule=event.rule,
            status=event.status,
            severity=event.severity,
            metric=event.metric,
            labels=dict(event.labels),
            value=event.value,
            threshold=event.threshold,
            summary=event.summary,
            started_at=event.started_at,
            ended_at=event.ended_at,
            ts=event.ts,
            expires_at=expires_at,
        )


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One webhook delivery attempt: status, latency, outcome, our own short detail."""

    account_id: str
    endpoint_id: str
    msg_id: str
    attempt: int
    at: float
    status: int | None
    latency_ms: float
    outcome: str
    detail: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class QueuedDelivery:
    """A pending webhook delivery of an opted-in account (the durable queue)."""

    account_id: str
    msg_id: str
    endpoint_id: str
    node_id: str
    notice: dict[str, Any]
    created_at: float
    expires_at: float


Source: TypeAlias = Literal["raw", "minute", "hour"]


@dataclass(frozen=True, slots=True)
class SeriesHistory:
    labels: dict[str, str]
    points: list[tuple[float, float, float, float]]
    """(bucket start, avg, min, max), oldest first; empty buckets are left out."""


@dataclass(frozen=True, slots=True)
class History:
    source: Source
    step: float
    series: list[SeriesHistory]
