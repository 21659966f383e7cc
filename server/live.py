"""Per-node live state, in memory only: nothing here is ever written to disk.

Per node: the last ``window_seconds`` of every series as a fixed ring of float32 values, the
latest value per series (a coarsened value such as ``"<5"`` stays that string; its ring slot is
NaN), the hello (agent version, interval, rule names), connection state, last-seen (monotonic
and wall), current alerts by fingerprint, a bounded list of recent events and a bounded LRU of
seen event ids (the dispatcher's dedupe).

Rings are time-bucketed on the server's monotonic clock: a series' slot for bucket ``b`` is
``b % capacity`` with ``step = max(interval, window / max_points)`` and ``capacity =
ceil(window / step)`` (≤ ``max_points``). Several samples in one bucket: the last one wins;
buckets with no sample read as gaps. Timestamps are never stored per value, and the agent's
own frame timestamps are not trusted for placement. One frame costs O(samples): normally one
comparison and one array store per sample (the node keeps the previous frame's layout, see
:meth:`LiveState.metrics`), a key build and a dict lookup when the layout changed.

Memory bound (the defaults; measured with tracemalloc): a series costs ≈1.8 KB at 300 points
(a 1.2 KB float32 ring plus its key, entry and layout objects), ≈1.3 KB at 180 points (a 5 s
agent). A node holds at most ``max_series`` (600) series (≤ ~1.1 MB),
``MAX_CURRENT_ALERTS`` (1,000) current alerts, ``MAX_RECENT_EVENTS`` (200) recent events and
``MAX_SEEN_IDS`` (10,000) seen ids (≤ ~1.2 MB, only if an agent really sent that many events).
All nodes together hold at most ``max_total_series`` (400,000) series, so series are bounded
by ~0.7 GB whatever the fleet (a series over a cap is dropped and counted); ``max_nodes``
(100,000) bounds the node table. A real agent (58 series) costs ≈100 KB at a 1 s interval,
≈75 KB at 5 s: 5,000 such nodes ≈ 0.5 GB.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from agent.protocol import AlertEvent, Hello, Metrics, WireSample
from server.clock import Clock
from server.storage.records import NodeRef

NAN: Final = float("nan")
DEFAULT_INTERVAL: Final = 5.0
"""The interval assumed for a node that has not sent a hello yet (the agent's default)."""
MAX_POINTS: Final = 300
MAX_SERIES_PER_NODE: Final = 600
MAX_TOTAL_SERIES: Final = 400_000
MAX_NODES: Final = 100_000
MAX_CURRENT_ALERTS: Final = 1_000
MAX_RECENT_EVENTS: Final = 200
MAX_SEEN_IDS: Final = 10_000

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]


class LiveFull(Exception):
    """The node table is at ``max_nodes``: a new node cannot be tracked now."""


class _Series:
    __slots__ = ("last", "latest", "ring")

    def __init__(self, capacity: int) -> None:
        self.ring = array("f", [NAN]) * capacity
        self.last = -1  # the newest bucket written (-1: none yet)
        self.latest: float | str = NAN


@dataclass(frozen=True, slots=True)
class SeriesView:
    metric: str
    labels: dict[str, str]
    step: float
    points: list[tuple[float, float | None]]
    """(wall-clock time, value or None for a gap), oldest first."""


class NodeLive:
    """One node's live state. Fields are read by the API and the node-down detector; only
    :class:`LiveState` (and, for ``node_down``, the detector) writes them."""

    __slots__ = (
        "agent_version",
        "alerts",
        "buffer_seconds",
        "capacity",
        "connected",
        "connected_since",
        "dropped_samples",
        "enrolled",
        "interval",
        "last_seen_mono",
        "last_seen_wall",
        "layout",
        "metric_names",
        "node_down",
        "recent",
        "ref",
        "rules",
        "seen",
        "series",
        "step",
    )

    def __init__(self, ref: NodeRef, seen_mono: float) -> None:
        self.ref = ref
        """The node as the store last described it (id, account, name, plan minimum)."""
        self.connected = False
        self.connected_since: float | None = None
        self.last_seen_mono = seen_mono
        """Last frame (or, before any, when tracking started: silence counts from there)."""
        self.last_seen_wall: float | None = None
        """Wall time of the last frame; None if the node has not sent one since start."""
        self.agent_version: str | None = None
        self.interval: float | None = None
        """The effective interval (hello's, raised to the plan minimum); None before hello."""
        self.rules: tuple[str, ...] = ()
        self.metric_names: tuple[str, ...] = ()
        self.buffer_seconds: int | None = None
        self.step = 0.0
        self.capacity = 0
        self.series: dict[SeriesKey, _Series] = {}
        self.dropped_samples = 0
        self.layout: list[tuple[str, dict[str, str], _Series]] = []
        """The last frame's series in order (see :meth:`LiveState.metrics`)."""
        self.alerts: dict[str, AlertEvent] = {}
        self.recent: deque[AlertEvent] = deque(maxlen=MAX_RECENT_EVENTS)
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.enrolled = False
        self.node_down: AlertEvent | None = None
        """The firing node_down event while the detector holds this node down."""

    @property
    def node_id(self) -> str:
        return self.ref.id

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def effective_interval(self) -> float:
        return self.interval if self.interval is not None else DEFAULT_INTERVAL


class LiveState:
    def __init__(
        self,
        window_seconds: int,
        clock: Clock,
        *,
        max_points: int = MAX_POINTS,
        max_series: int = MAX_SERIES_PER_NODE,
        max_total_series: int = MAX_TOTAL_SERIES,
        max_nodes: int = MAX_NODES,
    ) -> None:
        if window_seconds < 1 or max_points < 2 or max_series < 1 or max_nodes < 1:
            raise ValueError("window, max_points, max_series and max_nodes must be positive")
        self.window = float(window_seconds)
        self.clock = clock
        self.max_points = max_points
        self.max_series = max_series
        self.max_total_series = max_total_series
        self.max_nodes = max_nodes
        self.total_series = 0
        self._nodes: dict[str, NodeLive] = {}

    # -- the node table -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def get(self, node_id: str) -> NodeLive | None:
        return self._nodes.get(node_id)

    def nodes(self) -> Iterator[NodeLive]:
        """A snapshot iterator: safe while nodes are added or forgotten."""
        return iter(list(self._nodes.values()))

    def track(self, ref: NodeRef, *, since: float | None = None) -> NodeLive:
        """The node's entry, created if new (silent since ``since``, default now); an existing
        entry takes the newer ``ref`` (a renamed node, a changed plan)."""
        node = self._nodes.get(ref.id)
        if node is None:
            if len(self._nodes) >= self.max_nodes:
                raise LiveFull(f"live state holds the maximum of {self.max_nodes} nodes")
            seen = since if since is not None else self.clock.monotonic()
            node = self._nodes[ref.id] = NodeLive(ref, seen)
            self._set_step(node, DEFAULT_INTERVAL)
        else:
            node.ref = ref
        return node

    def forget(self, node_id: str) -> None:
        """Drop everything about a node (it was deleted)."""
        node = self._nodes.pop(node_id, None)
        if node is not None:
            self.total_series -= len(node.series)

    # -- connection lifecycle -----------------------------------------------------------------

    def connected(self, ref: NodeRef) -> NodeLive:
        node = self.track(ref)
        node.connected = True
        node.connected_since = self.clock.time()
        return node

    def disconnected(self, node_id: str) -> None:
        node = self._nodes.get(node_id)
        if node is not None:
            node.connected = False
            node.connected_since = None

    def touch(self, node: NodeLive) -> None:
        """A frame arrived from the node."""
        node.last_seen_mono = self.clock.monotonic()
        node.last_seen_wall = self.clock.time()

    def hello(self, node: NodeLive, hello: Hello, interval: float) -> None:
        """Record a hello; ``interval`` is the effective one (hello's, raised to the plan
        minimum). A changed interval restarts the node's series (a new ring resolution)."""
        node.agent_version = hello.agent_version
        node.rules = tuple(hello.rules)
        node.metric_names = tuple(hello.metrics)
        node.buffer_seconds = hello.buffer_seconds
        node.interval = interval
        self._set_step(node, interval)

    def _set_step(self, node: NodeLive, interval: float) -> None:
        step = max(interval, self.window / self.max_points)
        if step == node.step:
            return
        node.step = step
        node.capacity = max(1, min(self.max_points, math.ceil(self.window / step)))
        self.total_series -= len(node.series)
        node.series = {}
        node.layout = []

    # -- metrics ------------------------------------------------------------------------------

    def metrics(self, node: NodeLive, frame: Metrics) -> int:
        """Store one metrics frame; returns how many samples were kept (samples of series over
        the caps are dropped and counted in ``node.dropped_samples``).

        Agents send the same series in the same order every interval, so the node keeps the
        previous frame's layout (metric, labels, ring) and a frame that matches it is stored
        without building or hashing series keys; the first mismatch falls back to lookups."""
        bucket = int(self.clock.monotonic() // node.step)
        samples = frame.samples
        layout = node.layout
        done = 0
        if len(layout) == len(samples):
            capacity = node.capacity
            slot = bucket % capacity
            put = self._put
            for sample, (metric, labels, entry) in zip(samples, layout, strict=True):
                if sample.m != metric or sample.l != labels:
                    break
                value = sample.v
                if 0 <= bucket - entry.last < 2 and value.__class__ is float:  # the usual case
                    entry.last = bucket
                    entry.ring[slot] = value
                    entry.latest = value
                else:
                    put(entry, bucket, capacity, value)
                done += 1
            if done == len(samples):
                return done
        return done + self._metrics_slow(node, samples, done, bucket)

    def _metrics_slow(
        self, node: NodeLive, samples: list[WireSample], start: int, bucket: int
    ) -> int:
        layout = node.layout[:start]
        series, capacity = node.series, node.capacity
        kept = 0
        complete = True
        for sample in samples[start:]:
            labels = sample.l
            key = (sample.m, tuple(sorted(labels.items())) if labels else ())
            entry = series.get(key)
            if entry is None:
                if len(series) >= self.max_series or self.total_series >= self.max_total_series:
                    node.dropped_samples += 1
                    complete = False
                    continue
                entry = series[key] = _Series(capacity)
                self.total_series += 1
            layout.append((sample.m, labels, entry))
            self._put(entry, bucket, capacity, sample.v)
            kept += 1
        # A frame with dropped samples never takes the fast path (a freed cap is noticed).
        node.layout = layout if complete else []
        return kept

    @staticmethod
    def _put(entry: _Series, bucket: int, capacity: int, value: float | str) -> None:
        last = entry.last
        if bucket != last:
            if last >= 0:  # a new ring is all gaps already
                gap = bucket - last
                if gap >= capacity or gap < 0:
                    entry.ring = array("f", [NAN]) * capacity
                elif gap > 1:
                    ring = entry.ring
                    for b in range(last + 1, bucket):
                        ring[b % capacity] = NAN
            entry.last = bucket
        entry.ring[bucket % capacity] = NAN if isinstance(value, str) else value
        entry.latest = value

    def latest(
        self, node_id: str, metrics: Iterable[str] | None = None
    ) -> list[tuple[str, dict[str, str], float | str]]:
        """(metric, labels, latest value) per series, optionally only for ``metrics``."""
        node = self._nodes.get(node_id)
        if node is None:
            return []
        wanted = set(metrics) if metrics is not None else None
        return [
            (metric, dict(labels), entry.latest)
            for (metric, labels), entry in node.series.items()
            if (wanted is None or metric in wanted)
            and not (isinstance(entry.latest, float) and math.isnan(entry.latest))
        ]

    def series(self, node_id: str, metrics: Iterable[str] | None = None) -> list[SeriesView]:
        """The last window of each series (≤ capacity points, oldest first)."""
        node = self._nodes.get(node_id)
        if node is None or not node.series:
            return []
        wanted = set(metrics) if metrics is not None else None
        now_mono, now_wall = self.clock.monotonic(), self.clock.time()
        step, capacity = node.step, node.capacity
        newest = int(now_mono // step)
        oldest = newest - capacity + 1
        times = [now_wall - (now_mono - b * step) for b in range(oldest, newest + 1)]
        views: list[SeriesView] = []
        for (metric, labels), entry in node.series.items():
            if wanted is not None and metric not in wanted:
                continue
            ring, last = entry.ring, entry.last
            points: list[tuple[float, float | None]] = []
            for i, b in enumerate(range(oldest, newest + 1)):
                if b > last or b <= last - capacity:
                    points.append((times[i], None))
                else:
                    value = ring[b % capacity]
                    points.append((times[i], value if math.isfinite(value) else None))
            views.append(SeriesView(metric, dict(labels), step, points))
        return views

    # -- alert events -------------------------------------------------------------------------

    def seen_event(self, node_id: str, event_id: str) -> bool:
        """True if ``event_id`` was already seen for this node; otherwise remember it (an LRU
        of ``MAX_SEEN_IDS`` ids per node) and return False."""
        node = self._nodes.get(node_id)
        if node is None:
            return False
        seen = node.seen
        if event_id in seen:
            seen.move_to_end(event_id)
            return True
        seen[event_id] = None
        if len(seen) > MAX_SEEN_IDS:
            seen.popitem(last=False)
        return False

    def unsee(self, node_id: str, event_id: str) -> None:
        """Forget a seen id (its handling failed, so a resend must be handled again)."""
        node = self._nodes.get(node_id)
        if node is not None:
            node.seen.pop(event_id, None)

    def record_event(self, node_id: str, event: AlertEvent) -> bool:
        """Apply one event: firing adds or updates the current alert of its fingerprint,
        resolved removes it. An event older than what is held for its fingerprint is stale
        and ignored (returns False)."""
        node = self._nodes.get(node_id)
        if node is None:
            return False
        held = node.alerts.get(event.fingerprint)
        if held is not None and held.ts > event.ts:
            return False
        if event.status == "firing":
            if held is None and any(
                e.fingerprint == event.fingerprint and e.status == "resolved" and e.ts > event.ts
                for e in node.recent
            ):
                return False
            node.alerts[event.fingerprint] = event
            if len(node.alerts) > MAX_CURRENT_ALERTS:
                oldest = min(node.alerts.values(), key=lambda e: e.ts)
                del node.alerts[oldest.fingerprint]
        else:
            node.alerts.pop(event.fingerprint, None)
        node.recent.append(event)
        return True

    def current_alerts(self, node_id: str) -> list[AlertEvent]:
        node = self._nodes.get(node_id)
        return list(node.alerts.values()) if node is not None else []

    def recent_events(self, node_id: str) -> list[AlertEvent]:
        """The node's last ``MAX_RECENT_EVENTS`` events, oldest first."""
        node = self._nodes.get(node_id)
        return list(node.recent) if node is not None else []
