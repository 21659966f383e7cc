"""Node-down detection: a node that sends nothing for ``node_down_after`` × its interval gets a
server-side ``node_down`` alert event, resolved when it sends again. Both go through
:meth:`Dispatcher.start`, the same path as the agents' events.

The interval is the node's effective one from its hello (``live.DEFAULT_INTERVAL``, 5 s,
before any hello). Silence is all that counts: a socket closed cleanly is not special.

Restart safety: for ``start_grace_seconds`` after start (``app[STARTED_AT]``) nothing fires, so
the fleet has time to reconnect after a restart without a storm of false alerts. The enrolled
nodes (``store.enrolled_nodes()``) are tracked from start as silent since start, so one that
stays away is still detected once the grace and its limit have passed. The list is refreshed
every ``REFRESH_SECONDS``: a node deleted in the meantime (not in the list, not connected,
silent since before the query) is forgotten, so it cannot fire.

``detector`` is the app's cleanup context: it runs :meth:`NodeDownDetector.check` every
``TICK_SECONDS`` (on the app's clock) in a background task, cancelled and awaited on cleanup.
Tests call ``await app[DETECTOR].check(now_mono)`` directly with a FakeClock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from agent.protocol import AlertEvent
from server.clock import Clock
from server.dispatch import Dispatcher
from server.errors import Unavailable
from server.keys import CLOCK, DISPATCH, LIVE, SETTINGS, STARTED_AT, STATS, STORE
from server.live import LiveFull, LiveState, NodeLive
from server.storage.store import Store

log = logging.getLogger("oneconnect.server.nodedown")

RULE: Final = "node_down"
METRIC: Final = "node_silent_seconds"
TICK_SECONDS: Final = 1.0
REFRESH_SECONDS: Final = 300.0
RETRY_SECONDS: Final = 10.0


def fingerprint(node_id: str) -> str:
    return hashlib.sha256((RULE + node_id).encode()).hexdigest()[:16]


def _event_id() -> str:
    return "nd-" + secrets.token_hex(12)


class NodeDownDetector:
    def __init__(
        self,
        *,
        live: LiveState,
        dispatcher: Dispatcher,
        store: Store,
        clock: Clock,
        started_at: float,
        down_after: float,
        grace_seconds: float,
    ) -> None:
        self.live = live
        self.dispatcher = dispatcher
        self.store = store
        self.clock = clock
        self.started_at = started_at
        self.down_after = down_after
        self.grace_seconds = grace_seconds
        self.loaded = False
        """True once the enrolled nodes were loaded from the store."""
        self._lock = asyncio.Lock()

    def limit(self, node: NodeLive) -> float:
        return self.down_after * node.effective_interval

    async def load_enrolled(self) -> int:
        """Track every enrolled node (new ones as silent since start); forget tracked nodes
        that are gone from the store. Returns how many enrolled nodes there are."""
        queried_at = self.clock.monotonic()
        refs = await self.store.enrolled_nodes()
        known = {ref.id for ref in refs}
        for ref in refs:
            fresh = ref.id not in self.live
            try:
                node = self.live.track(ref, since=self.started_at)
            except LiveFull:
                log.warning("live state is full; %d enrolled nodes are not watched", len(refs))
                break
            if fresh:
                node.enrolled = True
        for node in self.live.nodes():
            if (
                node.node_id not in known
                and node.enrolled
                and not node.connected
                and node.last_seen_mono < queried_at
            ):
                self.live.forget(node.node_id)
        self.loaded = True
        return len(refs)

    async def check(self, now_mono: float) -> int:
        """One pass over every tracked node; returns how many events were submitted."""
        async with self._lock:
            in_grace = now_mono - self.started_at < self.grace_seconds
            submitted = 0
            for node in self.live.nodes():
                silent = now_mono - node.last_seen_mono
                limit = self.limit(node)
                if node.node_down is None:
                    if silent >= limit and not in_grace:
                        await self._fire(node, silent, limit)
                        submitted += 1
                elif silent < limit:
                    await self._resolve(node, silent, limit)
                    submitted += 1
            return submitted

    async def _fire(self, node: NodeLive, silent: float, limit: float) -> None:
        now = self.clock.time()
        event = AlertEvent(
            id=_event_id(),
            fingerprint=fingerprint(node.node_id),
            rule=RULE,
            status="firing",
            severity="critical",
            metric=METRIC,
            value=round(silent, 3),
            threshold=round(limit, 3),
            summary=f"Node {node.name} has sent nothing for {silent:.0f} s"[:1024],
            started_at=now - silent,
            ts=now,
        )
        node.node_down = event
        log.warning("node %s is down: silent for %.0f s", node.node_id, silent)
        # Deliveries go on in the background; the detector does not wait for receivers.
        self.dispatcher.start(node.ref, event).add_done_callback(_report_failure)

    async def _resolve(self, node: NodeLive, silent: float, limit: float) -> None:
        firing = node.node_down
        assert firing is not None
        now = self.clock.time()
        event = firing.model_copy(
            update={
                "id": _event_id(),
                "status": "resolved",
                "value": round(silent, 3),
                "threshold": round(limit, 3),
                "summary": f"Node {node.name} is sending again"[:1024],
                "ended_at": now,
                "ts": max(now, firing.ts),
            }
        )
        node.node_down = None
        log.info("node %s is back", node.node_id)
        # Deliveries go on in the background; the detector does not wait for receivers.
        self.dispatcher.start(node.ref, event).add_done_callback(_report_failure)

    async def run(self) -> None:
        """Forever: load the enrolled nodes (retrying), then check every tick."""
        next_refresh = 0.0
        while True:
            now = self.clock.monotonic()
            if now >= next_refresh:
                try:
                    await self.load_enrolled()
                    next_refresh = now + REFRESH_SECONDS
                except Unavailable:
                    log.warning("cannot load enrolled nodes (storage unreachable); retrying")
                    next_refresh = now + RETRY_SECONDS
            try:
                await self.check(self.clock.monotonic())
            except Exception:  # a bug must not stop detection for good
                log.exception("node-down check failed")
            await asyncio.sleep(TICK_SECONDS)


DETECTOR: Final = web.AppKey("nodedown_detector", NodeDownDetector)


async def detector(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the detector in ``app[DETECTOR]`` and its background task."""
    settings = app[SETTINGS]
    det = NodeDownDetector(
        live=app[LIVE],
        dispatcher=app[DISPATCH],
        store=app[STORE],
        clock=app[CLOCK],
        started_at=app[STARTED_AT],
        down_after=settings.node_down_after,
        grace_seconds=settings.start_grace_seconds,
    )
    app[DETECTOR] = det
    live, stats = app[LIVE], app[STATS]
    stats.gauge("live_nodes", "Nodes held in live state", lambda: len(live))
    stats.gauge("live_series", "Series held in live state", lambda: live.total_series)
    stats.gauge(
        "nodes_down",
        "Nodes currently down",
        lambda: sum(n.node_down is not None for n in live.nodes()),
    )
    task = asyncio.create_task(det.run(), name="oneconnect-nodedown")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _report_failure(settled: asyncio.Future[bool]) -> None:
    if not settled.cancelled() and (exc := settled.exception()) is not None:
        log.error("a node_down event failed in dispatch (%s)", exc.__class__.__name__)
