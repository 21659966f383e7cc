"""The fleet, live from server memory: every node of an account with its status, last seen, key
gauges and firing alerts — computed once a second for the accounts someone watches, and fanned
out to their streams (``server.api.fleet`` serves it: the JSON snapshot and the SSE stream).

A node's entry::

    status     down      not connected, or node_down firing
               degraded  any warning or critical alert firing
               up        otherwise
    cpu        cpu_usage_percent
    memory     100 - memory_available_percent (memory in use, %)
    conntrack  conntrack_used_percent (null while the agent withholds it: fewer than k peers)
    rx, tx     bytes/s of the busiest interface (by rx + tx), null when withheld

One :class:`FleetHub` per app (:func:`hub_of`) keeps, per watched account, the last state it
sent and the open streams. Every ``TICK_SECONDS`` it recomputes each watched account's state
(a node with no new frame, alert or connection change keeps its entry: see
:func:`change_key`), diffs it against the last one and puts one encoded ``update`` event — the
changed fields of each changed node, the removed ids — in every stream of the account; no
change, no event. Nothing runs while nobody watches. The account's node list (names, nodes that
never connected) is re-read from the store every ``REFRESH_SECONDS``; live nodes of the account
are found in one pass over live state per tick.

Each stream has a bounded queue (``QUEUE_LIMIT`` events): a consumer that falls behind is closed
(its EventSource reconnects to a fresh snapshot), so memory per stream is bounded; a stream
whose client went away is dropped at the next tick. Streams are capped per account and in all.
Live state is read through :class:`~server.live.LiveState`'s public methods and the fields
:class:`~server.live.NodeLive` documents as read by the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from server.errors import TooManyRequests, Unavailable
from server.keys import LIVE, STATS, STORE
from server.live import LiveState
from server.stats import Stats
from server.storage.store import Store

log = logging.getLogger("oneconnect.server.fleet")

TICK_SECONDS: Final = 1.0
REFRESH_SECONDS: Final = 10.0
"""How often a watched account's node list (names, nodes that never connected) is re-read."""
QUEUE_LIMIT: Final = 8
MAX_STREAMS_PER_ACCOUNT: Final = 16
MAX_STREAMS: Final = 2000
GAUGES: Final = (
    "cpu_usage_percent",
    "memory_available_percent",
    "conntrack_used_percent",
    "net_rx_bytes_per_second",
    "net_tx_bytes_per_second",
)
_RANK: Final = {"info": 1, "warning": 2, "critical": 3}
NodeState = dict[str, Any]


def _number(value: float | str | None, digits: int) -> float | None:
    if not isinstance(value, float) or not math.isfinite(value):
        return None
    return round(value, digits)


def node_state(live: LiveState, node_id: str, name: str, enrolled: bool) -> NodeState:
    """One node's fleet entry, from live state (a node not in it is down, never seen)."""
    node = live.get(node_id)
    state: NodeState = {
        "id": node_id,
        "name": name,
        "enrolled": enrolled,
        "status": "down",
        "connected": False,
        "last_seen": None,
        "cpu": None,
        "memory": None,
        "conntrack": None,
        "rx": None,
        "tx": None,
        "alerts": 0,
        "severity": None,
        "alert_ts": None,
    }
    if node is None:
        return state
    state["connected"] = node.connected
    if node.last_seen_wall is not None:
        state["last_seen"] = round(node.last_seen_wall)
        state["enrolled"] = True
    rx: dict[str, float] = {}
    tx: dict[str, float] = {}
    for metric, labels, value in live.latest(node_id, GAUGES):
        if metric == "cpu_usage_percent":
            state["cpu"] = _number(value, 1)
        elif metric == "memory_available_percent":
            free = _number(value, 1)
            state["memory"] = None if free is None else round(100.0 - free, 1)
        elif metric == "conntrack_used_percent":
            state["conntrack"] = _number(value, 1)
        elif isinstance(value, float) and math.isfinite(value):
            side = rx if metric == "net_rx_bytes_per_second" else tx
            side[labels.get("interface", "")] = value
    if rx or tx:
        busiest = max(set(rx) | set(tx), key=lambda i: rx.get(i, 0.0) + tx.get(i, 0.0))
        state["rx"] = round(rx[busiest]) if busiest in rx else None
        state["tx"] = round(tx[busiest]) if busiest in tx else None
    alerts = live.current_alerts(node_id)
    down = node.node_down is not None or any(a.rule == "node_down" for a in alerts)
    worst = max((_RANK[a.severity] for a in alerts), default=0)
    state["alerts"] = len(alerts)
    state["severity"] = next((s for s, r in _RANK.items() if r == worst), None)
    state["alert_ts"] = max((a.ts for a in alerts), default=None)
    if not node.connected or down:
        state["status"] = "down"
    elif worst >= _RANK["warning"]:
        state["status"] = "degraded"
    else:
        state["status"] = "up"
    return state


def change_key(live: LiveState, node_id: str, name: str, enrolled: bool) -> tuple[Any, ...]:
    """What a node's fleet entry depends on, cheaply: a new frame moves ``last_seen_mono``,
    an alert event is appended to ``recent``, node_down and the connection are flags."""
    node = live.get(node_id)
    if node is None:
        return (name, enrolled)
    recent = node.recent
    return (
        name,
        enrolled,
        node.last_seen_mono,
        node.connected,
        node.node_down is None,
        len(node.alerts),
        recent[-1] if recent else None,
    )


def counts(states: Iterable[NodeState]) -> dict[str, int]:
    found = {"up": 0, "degraded": 0, "down": 0, "alerts": 0}
    for state in states:
        found[state["status"]] += 1
        found["alerts"] += state["alerts"]
    return found


def diff(old: dict[str, NodeState], new: dict[str, NodeState]) -> tuple[list[NodeState], list[str]]:
    """What changed from ``old`` to ``new``: per changed node its id and changed fields (a new
    node whole), and the removed ids."""
    changed: list[NodeState] = []
    for node_id, state in new.items():
        before = old.get(node_id)
        if before is None:
            changed.append(state)
            continue
        delta = {k: v for k, v in state.items() if before.get(k) != v}
        if delta:
            changed.append({"id": node_id, **delta})
    removed = [node_id for node_id in old if node_id not in new]
    return changed, removed


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event (JSON has no raw newlines, so one ``data:`` line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Stream:
    """One open stream: a bounded queue of encoded events, closed when it overflows."""

    def __init__(self, feed: AccountFeed, transport: asyncio.BaseTransport | None = None) -> None:
        self.feed = feed
        self.transport = transport
        """The client's connection: a stream whose client went away is dropped at the next
        tick, not only at its next write."""
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_LIMIT)
        self.closed: str | None = None
        """Why the server ended this stream (None while open)."""
        self._wake = asyncio.Event()

    def push(self, message: bytes) -> bool:
        if self.closed is not None:
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close("slow consumer")
            return False
        return True

    @property
    def gone(self) -> bool:
        transport = self.transport
        return transport is not None and transport.is_closing()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        self._wake.set()

    async def next(self, timeout: float) -> bytes | None:  # noqa: ASYNC109
        """The next event, or None after ``timeout`` s or when closed."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        if self.closed is not None:
            return None
        getter = asyncio.ensure_future(self.queue.get())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({getter, woken}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            woken.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None


@dataclass
class AccountFeed:
    account_id: str
    nodes: dict[str, tuple[str, bool]] = field(default_factory=dict)
    """The account's nodes from the store: id -> (name, enrolled)."""
    refreshed: float = -math.inf
    state: dict[str, NodeState] = field(default_factory=dict)
    streams: set[Stream] = field(default_factory=set)
    keys: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """Per node, what its state was computed from (see :func:`change_key`)."""


class FleetHub:
    """Per app: the watched accounts' fleet state, computed once per tick, fanned out."""

    def __init__(self, live: LiveState, store: Store, stats: Stats) -> None:
        self.live = live
        self.store = store
        self.stats = stats
        self.feeds: dict[str, AccountFeed] = {}
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def streams(self) -> int:
        return sum(len(feed.streams) for feed in self.feeds.values())

    async def snapshot(self, account_id: str) -> dict[str, NodeState]:
        """A fresh fleet state of one account (the GET route)."""
        nodes = await self.store.nodes(account_id)
        feed = AccountFeed(account_id, {n.id: (n.name, n.enrolled_at is not None) for n in nodes})
        return self._compute(feed, self._live_by_account({account_id}))

    async def subscribe(
        self, account_id: str, transport: asyncio.BaseTransport | None = None
    ) -> tuple[Stream, bytes]:
        """A new stream of the account and its first event (the current snapshot)."""
        if self.streams >= MAX_STREAMS:
            raise TooManyRequests("too many fleet streams open on this server", retry_after=30)
        feed = self.feeds.get(account_id)
        if feed is not None and len(feed.streams) >= MAX_STREAMS_PER_ACCOUNT:
            raise TooManyRequests(
                f"at most {MAX_STREAMS_PER_ACCOUNT} fleet streams per account", retry_after=30
            )
        if feed is None:
            feed = AccountFeed(account_id)
            await self._refresh(feed)
            feed.state = self._compute(feed, self._live_by_account({account_id}))
            # Another stream of the account may have subscribed while we awaited the store.
            feed = self.feeds.setdefault(account_id, feed)
        stream = Stream(feed, transport)
        feed.streams.add(stream)
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run())
        first = sse("snapshot", self._message(feed.state, nodes=list(feed.state.values())))
        return stream, first

    def unsubscribe(self, stream: Stream) -> None:
        feed = stream.feed
        feed.streams.discard(stream)
        if not feed.streams and self.feeds.get(feed.account_id) is feed:
            del self.feeds[feed.account_id]
        if not self.feeds and self._task is not None:
            self._task.cancel()
            self._task = None

    def close_all(self, reason: str) -> None:
        for feed in list(self.feeds.values()):
            for stream in list(feed.streams):
                stream.close(reason)

    def _message(self, state: dict[str, NodeState], **body: Any) -> dict[str, Any]:
        return {"ts": round(self.live.clock.time(), 3), "counts": counts(state.values()), **body}

    def _live_by_account(self, accounts: set[str]) -> dict[str, dict[str, str]]:
        """Live nodes of these accounts: account id -> {node id: name} (one pass)."""
        found: dict[str, dict[str, str]] = {a: {} for a in accounts}
        for node in self.live.nodes():
            names = found.get(node.ref.account_id)
            if names is not None:
                names[node.node_id] = node.name
        return found

    def _compute(self, feed: AccountFeed, live: dict[str, dict[str, str]]) -> dict[str, NodeState]:
        """The account's fleet state; a node that sent nothing and whose alerts and
        connection did not change since the last round keeps its state (not recomputed)."""
        known = feed.nodes
        names = live.get(feed.account_id, {})
        ids = dict.fromkeys([*known, *names])
        before, keys = feed.state, feed.keys
        state: dict[str, NodeState] = {}
        fresh: dict[str, tuple[Any, ...]] = {}
        for node_id in ids:
            name, enrolled = known.get(node_id, (names.get(node_id, ""), True))
            key = change_key(self.live, node_id, name, enrolled)
            fresh[node_id] = key
            old = before.get(node_id)
            if old is not None and keys.get(node_id) == key:
                state[node_id] = old
            else:
                state[node_id] = node_state(self.live, node_id, name, enrolled)
        feed.keys = fresh
        return state

    async def _refresh(self, feed: AccountFeed) -> None:
        try:
            nodes = await self.store.nodes(feed.account_id)
        except Unavailable:
            log.warning("storage unreachable: the fleet's node list was not refreshed")
            return
        feed.nodes = {n.id: (n.name, n.enrolled_at is not None) for n in nodes}
        feed.refreshed = self._loop.time()

    async def tick(self) -> None:
        """One round: every watched account's changes to its streams."""
        now = self._loop.time()
        for feed in list(self.feeds.values()):
            if now - feed.refreshed >= REFRESH_SECONDS:
                await self._refresh(feed)
        for feed in list(self.feeds.values()):
            for stream in list(feed.streams):
                if stream.gone:
                    stream.close("client went away")
        feeds = list(self.feeds.values())
        live = self._live_by_account({feed.account_id for feed in feeds})
        for feed in feeds:
            state = self._compute(feed, live)
            changed, removed = diff(feed.state, state)
            feed.state = state
            if not changed and not removed:
                continue
            message = sse("update", self._message(state, changed=changed, removed=removed))
            for stream in list(feed.streams):
                if not stream.push(message):
                    self.stats.inc(
                        "fleet_streams_closed",
                        help="Fleet streams the server closed, by reason",
                        reason="slow",
                    )

    async def _run(self) -> None:
        """A round every TICK_SECONDS, start to start (a round's own time does not stretch
        the period), never two closer than that."""
        loop = self._loop
        while True:
            started = loop.time()
            try:
                await self.tick()
            except Exception as exc:  # one bad round must not end the fleet's updates
                log.error("fleet update round failed (%s)", exc.__class__.__name__)
            await asyncio.sleep(max(0.0, started + TICK_SECONDS - loop.time()))


_HUBS: weakref.WeakKeyDictionary[LiveState, FleetHub] = weakref.WeakKeyDictionary()
"""One hub per app, keyed by the app's live state (the app itself is frozen once running)."""


def hub_of(app: web.Application) -> FleetHub:
    live = app[LIVE]
    hub = _HUBS.get(live)
    if hub is None:
        hub = _HUBS[live] = FleetHub(live, app[STORE], app[STATS])
    return hub


async def close_streams(app: web.Application) -> None:
    """An ``on_shutdown`` hook: end every open fleet stream now, so shutdown does not wait."""
    hub = _HUBS.get(app[LIVE])
    if hub is not None:
        hub.close_all("server shutting down")
