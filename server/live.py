"""Per-node live state, in memory only: nothing here is ever written to disk.

Per node: the last ``window_seconds`` of every series as float32 values, the latest value per
series (a coarsened value such as ``"<5"`` stays that string; its ring value is NaN), the hello
(agent version, interval, rule names), connection state, last-seen (monotonic and wall),
current alerts by fingerprint (from events, or resynced from a hello after a restart: see
:meth:`LiveState.resync`), a bounded list of recent events and a bounded LRU of seen event ids
(the dispatcher's dedupe).

Rings are time-bucketed on the server's monotonic clock: bucket ``b`` lives in row ``b %
capacity`` with ``step = max(interval, window / max_points)`` and ``capacity = ceil(window /
step)`` (≤ ``max_points``). A node keeps one table of ``capacity`` rows by one float32 column
per series (a ``bytearray``); when its newest bucket moves on, the rows it passes are blanked
(NaN), so a bucket without a sample reads as a gap. Several samples in one bucket: the last one
wins. Timestamps are never stored per value, and the agent's own frame timestamps are not
trusted for placement. One frame costs O(samples): normally one comparison, one float32 store
and one list store per sample (the node keeps the previous frame's layout, see
:meth:`LiveState.metrics`), a key build and a dict lookup when the layout changed. Samples
come as the plain validated dicts of :func:`agent.protocol.parse_agent_frame`, not models.

Nothing per series is an object the cyclic garbage collector must visit: keys and layout
entries are tuples of strings and ints, values sit in the table and in one list per node. (An
object, an array and a tuple per series made every full collection of a 5,000-node server walk
~800,000 more objects: a pause of 0.2-0.6 s.)

Memory bound (the defaults; measured with tracemalloc): a series costs ≈1.5 KB at 300 points
(its 1.2 KB column plus its key, dict entry, layout entry and latest value), ≈1.0 KB at 180
points (a 5 s agent); a node has at most seven spare columns. A node holds at most
``max_series`` (600) series (≤ ~0.9 MB), ``MAX_CURRENT_ALERTS`` (1,000) current alerts,
``MAX_RECENT_EVENTS`` (200) recent events and ``MAX_SEEN_IDS`` (10,000) seen ids (≤ ~1.2 MB,
only if an agent really sent that many events). All nodes together hold at most
``max_total_series`` (400,000) series, so series are bounded by ~0.6 GB whatever the fleet (a
series over a cap is dropped and counted); ``max_nodes`` (100,000) bounds the node table. A
real agent (58 series) costs ≈95 KB at a 1 s interval, ≈65 KB at 5 s: 5,000 such nodes ≈ 0.5
GB.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple, cast

from agent.protocol import AlertEvent, Hello, Metrics, MetricsFrame, SampleData
from server.clock import Clock
from server.shapes import FrameShape, ShapedFrame
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
COLUMNS_AT_ONCE: Final = 8
"""A node's table grows to its series count rounded up to this (once per frame at most)."""

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]

_NAN32: Final = struct.pack("f", NAN)


def _in_order(node: NodeLive, shape: FrameShape) -> bool:
    """Whether the node's layout is ``shape``'s series, in columns 0, 1, … in order."""
    return (
        len(node.layout) == len(shape.metrics)
        and all(col == i for i, (_, col) in enumerate(node.layout))
        and [metric for metric, _ in node.layout] == shape.metrics
        and node.layout_labels == shape.labels
    )


def _put_big(cells: memoryview[float], index: int, value: float | str) -> None:
    """A finite value beyond float32's range: stored as ±inf, read back as a gap (what a C
    cast does, and what Python 3.11 does for ``cells[index] = value``)."""
    cells[index] = math.copysign(math.inf, float(value))


class LiveFull(Exception):
    """The node table is at ``max_nodes``: a new node cannot be tracked now."""


class SeriesRing(NamedTuple):
    """One series as :attr:`NodeLive.series` shows it (a copy, for inspection)."""

    col: int
    ring: list[float]
    """Its values by row (row ``b % capacity`` holds bucket ``b``; NaN: a gap)."""


class _SeriesMap(Mapping[SeriesKey, SeriesRing]):
    """A node's series (key → column and ring), read-only, read from its table."""

    __slots__ = ("_node",)

    def __init__(self, node: NodeLive) -> None:
        self._node = node

    def __getitem__(self, key: SeriesKey) -> SeriesRing:
        node = self._node
        col = node.cols[key]
        return SeriesRing(col, list(node.cells[col :: node.width]))

    def __iter__(self) -> Iterator[SeriesKey]:
        return iter(self._node.cols)

    def __len__(self) -> int:
        return len(self._node.cols)


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
        "cells",
        "cols",
        "connected",
        "connected_since",
        "dropped_samples",
        "enrolled",
        "interval",
        "last_seen_mono",
        "last_seen_wall",
        "latest_value",
        "layout",
        "layout_labels",
        "metric_names",
        "newest",
        "node_down",
        "recent",
        "ref",
        "rules",
        "seen",
        "shape",
        "step",
        "table",
        "width",
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
        self.cols: dict[SeriesKey, int] = {}
        """Each series' column in the table."""
        self.width = 0
        """Columns in the table (≥ ``len(cols)``; spare ones are all NaN)."""
        self.table = bytearray()
        """``capacity`` rows of ``width`` float32 values."""
        self.cells: memoryview[float] = memoryview(self.table).cast("f")
        """The table as floats: bucket ``b`` of column ``c`` is ``[(b % capacity) * width + c]``."""
        self.newest = -1
        """The newest bucket the table holds (-1: none yet); older rows than ``newest -
        capacity`` have been reused."""
        self.latest_value: list[float | str] = []
        """Per column: the last value sent (NaN: none yet)."""
        self.dropped_samples = 0
        self.layout: list[tuple[str, int]] = []
        """The last frame's series in order, as (metric, column), beside ``layout_labels``:
        their labels as sent (None when the sample had no ``l``); see :meth:`LiveState.metrics`."""
        self.layout_labels: list[dict[str, str] | None] = []
        self.shape: FrameShape | None = None
        """The frame shape whose series are this layout, in columns 0, 1, …: a frame read by
        it is stored with one slice assignment (see :meth:`LiveState.metrics`)."""
        self.alerts: dict[str, AlertEvent] = {}
        self.recent: deque[AlertEvent] = deque(maxlen=MAX_RECENT_EVENTS)
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.enrolled = False
        self.node_down: AlertEvent | None = None
        """The firing node_down event while the detector holds this node down."""

    @property
    def series(self) -> Mapping[SeriesKey, SeriesRing]:
        """The node's series (a read-only view of its table)."""
        return _SeriesMap(self)

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
            self.total_series -= len(node.cols)

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
        self.total_series -= len(node.cols)
        node.cols = {}
        node.width = 0
        node.table = bytearray()
        node.cells = memoryview(node.table).cast("f")
        node.newest = -1
        node.latest_value = []
        node.layout = []
        node.layout_labels = []
        node.shape = None

    # -- metrics ------------------------------------------------------------------------------

    def metrics(self, node: NodeLive, frame: MetricsFrame | ShapedFrame | Metrics) -> int:
        """Store one metrics frame; returns how many samples were kept (samples of series over
        the caps are dropped and counted in ``node.dropped_samples``). Ingest passes the
        frame as :meth:`server.shapes.FrameShape.read` or
        :func:`agent.protocol.parse_agent_frame` returns it; a :class:`Metrics` model is
        taken too.

        Agents send the same series in the same order every interval, so the node keeps the
        previous frame's layout (metric, labels, column) and a frame that matches it is stored
        without building or hashing series keys; the first mismatch falls back to lookups.
        A frame read by the shape the layout was made from (``node.shape``, the same object)
        needs no comparison at all: its values go to columns 0… in one slice assignment."""
        if type(frame) is ShapedFrame:
            if frame.shape is node.shape:
                return self._store_in_order(node, frame.values)
            done = self.metrics(node, frame.as_frame())
            node.shape = frame.shape if _in_order(node, frame.shape) else None
            return done
        if isinstance(frame, Metrics):
            frame = MetricsFrame.of(frame)
        bucket = int(self.clock.monotonic() // node.step)
        if bucket != node.newest:
            self._advance(node, bucket)
        samples = frame.samples
        layout = node.layout
        done = 0
        if len(layout) == len(samples):
            cells, latest = node.cells, node.latest_value
            row = (bucket % node.capacity) * node.width
            for sample, labels, (metric, col) in zip(
                samples, node.layout_labels, layout, strict=True
            ):
                if sample["m"] != metric or sample.get("l") != labels:
                    break
                value = latest[col] = sample["v"]
                try:
                    cells[row + col] = NAN if isinstance(value, str) else value
                except (OverflowError, ValueError):  # beyond float32 on a stricter Python
                    _put_big(cells, row + col, value)
                done += 1
            if done == len(samples):
                return done
        return done + self._metrics_slow(node, samples, done, bucket)

    def _metrics_slow(
        self, node: NodeLive, samples: list[SampleData], start: int, bucket: int
    ) -> int:
        cols = node.cols
        placed: list[tuple[str, dict[str, str] | None, int, float | str]] = []
        complete = True
        for sample in samples[start:]:
            metric, labels = sample["m"], sample.get("l")
            key = (metric, tuple(sorted(labels.items())) if labels else ())
            col = cols.get(key)
            if col is None:
                if len(cols) >= self.max_series or self.total_series >= self.max_total_series:
                    node.dropped_samples += 1
                    complete = False
                    continue
                col = cols[key] = len(cols)
                node.latest_value.append(NAN)
                self.total_series += 1
            placed.append((metric, labels, col, sample["v"]))
        if len(cols) > node.width:  # once per frame, to the columns in use (rounded up)
            self._widen(node, -(-len(cols) // COLUMNS_AT_ONCE) * COLUMNS_AT_ONCE)
        layout, layout_labels = node.layout[:start], node.layout_labels[:start]
        cells, latest = node.cells, node.latest_value
        row = (bucket % node.capacity) * node.width
        for metric, labels, col, value in placed:
            layout.append((metric, col))
            layout_labels.append(labels)
            latest[col] = value
            try:
                cells[row + col] = NAN if isinstance(value, str) else value
            except (OverflowError, ValueError):
                _put_big(cells, row + col, value)
        # A frame with dropped samples never takes the fast path (a freed cap is noticed).
        node.layout, node.layout_labels = (layout, layout_labels) if complete else ([], [])
        node.shape = None
        return len(placed)

    def _store_in_order(self, node: NodeLive, values: list[float | str]) -> int:
        """A frame whose samples are the layout's series, which sit in columns 0…n-1."""
        bucket = int(self.clock.monotonic() // node.step)
        if bucket != node.newest:
            self._advance(node, bucket)
        count = len(values)
        row = (bucket % node.capacity) * node.width
        node.latest_value[:count] = values
        try:  # float32 as a C cast: beyond its range is ±inf, as _put_big stores
            floats = array("f", cast("list[float]", values))
        except TypeError:  # a coarsened "<k" (a str) among them: a gap in the ring
            floats = array("f", [NAN if isinstance(v, str) else v for v in values])
        node.cells[row : row + count] = floats
        return count

    @staticmethod
    def _advance(node: NodeLive, bucket: int) -> None:
        """Make ``bucket`` the newest: the rows of the buckets passed (the ring's oldest) become
        gaps. (The monotonic clock never goes back; if a bucket did, the table is cleared.)"""
        newest, width, capacity = node.newest, node.width, node.capacity
        if newest < 0 or not newest < bucket < newest + capacity:
            node.table[:] = _NAN32 * (capacity * width)
        else:
            size = 4 * width
            blank = _NAN32 * width
            table = node.table
            for b in range(newest + 1, bucket + 1):
                start = (b % capacity) * size
                table[start : start + size] = blank
        node.newest = bucket

    @staticmethod
    def _widen(node: NodeLive, width: int) -> None:
        """Give the table ``width`` columns (new ones all gaps), keeping every row's values."""
        old, old_size, size = node.table, 4 * node.width, 4 * width
        table = bytearray(_NAN32 * (node.capacity * width))
        if old_size:
            for row in range(node.capacity):
                table[row * size : row * size + old_size] = old[
                    row * old_size : (row + 1) * old_size
                ]
        node.table, node.width = table, width
        node.cells = memoryview(table).cast("f")

    def latest(
        self, node_id: str, metrics: Iterable[str] | None = None
    ) -> list[tuple[str, dict[str, str], float | str]]:
        """(metric, labels, latest value) per series, optionally only for ``metrics``."""
        node = self._nodes.get(node_id)
        if node is None:
            return []
        wanted = set(metrics) if metrics is not None else None
        values = node.latest_value
        found: list[tuple[str, dict[str, str], float | str]] = []
        for (metric, labels), col in node.cols.items():
            value = values[col]
            if (wanted is None or metric in wanted) and not (
                isinstance(value, float) and math.isnan(value)
            ):
                found.append((metric, dict(labels), value))
        return found

    def series(self, node_id: str, metrics: Iterable[str] | None = None) -> list[SeriesView]:
        """The last window of each series (≤ capacity points, oldest first)."""
        node = self._nodes.get(node_id)
        if node is None or not node.cols:
            return []
        wanted = set(metrics) if metrics is not None else None
        now_mono, now_wall = self.clock.monotonic(), self.clock.time()
        step, capacity, width, held = node.step, node.capacity, node.width, node.newest
        newest = int(now_mono // step)
        oldest = newest - capacity + 1
        times = [now_wall - (now_mono - b * step) for b in range(oldest, newest + 1)]
        cells = node.cells
        views: list[SeriesView] = []
        for (metric, labels), col in node.cols.items():
            if wanted is not None and metric not in wanted:
                continue
            points: list[tuple[float, float | None]] = []
            for i, b in enumerate(range(oldest, newest + 1)):
                if b > held or b <= held - capacity:
                    points.append((times[i], None))
                else:
                    value = cells[(b % capacity) * width + col]
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
            if held is None and _resolved_since(node, event):
                return False
            _make_current(node, event)
        else:
            node.alerts.pop(event.fingerprint, None)
        node.recent.append(event)
        return True

    def resync(self, node_id: str, event: AlertEvent) -> bool:
        """Make a firing alert the agent named in its hello current again (its firing event was
        taken over before this process started): its id is marked seen and it joins the current
        alerts — but not the recent events, since nothing happened now. Nothing changes (False)
        if the fingerprint is already current, the id was seen already, or a later resolved
        event of the fingerprint is held."""
        node = self._nodes.get(node_id)
        if node is None or event.fingerprint in node.alerts or event.id in node.seen:
            return False
        if _resolved_since(node, event):
            return False
        self.seen_event(node_id, event.id)
        _make_current(node, event)
        return True

    def unresync(self, node_id: str, event: AlertEvent) -> None:
        """Undo :meth:`resync` of ``event`` (learning it failed half-way)."""
        node = self._nodes.get(node_id)
        if node is None:
            return
        node.seen.pop(event.id, None)
        if node.alerts.get(event.fingerprint) is event:
            del node.alerts[event.fingerprint]

    def current_alert(self, node_id: str, fingerprint: str) -> AlertEvent | None:
        """The node's current (firing) alert of this fingerprint, if any."""
        node = self._nodes.get(node_id)
        return node.alerts.get(fingerprint) if node is not None else None

    def current_alerts(self, node_id: str) -> list[AlertEvent]:
        node = self._nodes.get(node_id)
        return list(node.alerts.values()) if node is not None else []

    def recent_events(self, node_id: str) -> list[AlertEvent]:
        """The node's last ``MAX_RECENT_EVENTS`` events, oldest first."""
        node = self._nodes.get(node_id)
        return list(node.recent) if node is not None else []


def _resolved_since(node: NodeLive, event: AlertEvent) -> bool:
    """True if the node's recent events hold a resolved event of ``event``'s fingerprint that
    is newer than it."""
    return any(
        e.fingerprint == event.fingerprint and e.status == "resolved" and e.ts > event.ts
        for e in node.recent
    )


def _make_current(node: NodeLive, event: AlertEvent) -> None:
    """``event`` becomes the current alert of its fingerprint (the oldest current alert goes
    past ``MAX_CURRENT_ALERTS``)."""
    node.alerts[event.fingerprint] = event
    if len(node.alerts) > MAX_CURRENT_ALERTS:
        oldest = min(node.alerts.values(), key=lambda e: e.ts)
        del node.alerts[oldest.fingerprint]
