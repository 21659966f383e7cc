"""Alert dispatch: the one path every alert event takes — agents' events (from ingest) and the
server's own ``node_down`` events (from the node-down detector).

    settled = dispatcher.start(node, event)   # recorded now; deliveries run in the background
    fresh = await settled                     # True once every sink settled; False: a duplicate

``start`` is synchronous up to the hand-over: it dedupes by event id per node and records the
event in live state (firing adds or updates the current alert of its fingerprint, resolved
removes it) before it returns, then awaits every sink in ``sinks`` in a task. The future it
returns resolves when all sinks returned — for webhook delivery, when every delivery of the
event succeeded or ended final. The ingest acks the agent's event only then, so a server that
dies mid-delivery gets the event again from the agent's resend.

A resend of an event still in flight (the agent reconnected meanwhile) waits for the same
deliveries instead of starting new ones, and answers False once they settle. A stale event
(older than what live state holds for its fingerprint) settles at once without reaching the
sinks. A sink that raises makes the future raise and forgets the id again, so the agent's
resend is handled afresh (not acked as a duplicate).

``submit`` is ``await start(...)``. Sinks: ``async sink(node, event)`` — webhook dispatch
(``server.webhooks.dispatch``) and alert history (``server.saved``) are two.

Resync (after a server restart): ``await dispatcher.resync(node, events)`` takes the firing
alerts an agent named in its hello — firing events an earlier process took over and acked,
which the agent will not resend. Each one live state does not know yet
(:meth:`LiveState.resync`: not current, id not seen, no later resolved held) becomes a current
alert with its id seen, and every learner in ``learners`` is awaited with it (webhook dispatch
computes its routing there and resumes reminders); no sink runs, so nothing is delivered,
queued or saved again. A learner that raises undoes that alert's resync and the error goes on.
A later resend of the id is a duplicate; the later resolved event goes through ``start``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from agent.protocol import AlertEvent
from server.live import LiveState
from server.stats import Stats
from server.storage.records import NodeRef

EventSink = Callable[[NodeRef, AlertEvent], Awaitable[None]]
log = logging.getLogger("oneconnect.server.dispatch")


class Dispatcher:
    def __init__(self, live: LiveState, stats: Stats) -> None:
        self.live = live
        self.stats = stats
        self.sinks: list[EventSink] = []
        """Awaited in order for every new event (webhook delivery plugs in here)."""
        self.learners: list[EventSink] = []
        """Awaited in order for every resynced alert (see the module docstring)."""
        self._inflight: dict[tuple[str, str], asyncio.Task[bool]] = {}

    @property
    def inflight(self) -> int:
        """Events whose sinks have not settled yet."""
        return len(self._inflight)

    def start(self, node: NodeRef, event: AlertEvent) -> asyncio.Future[bool]:
        """Take over one event (see the module docstring); must run inside the event loop."""
        live = self.live
        if node.id not in live:
            live.track(node)
        key = (node.id, event.id)
        running = self._inflight.get(key)
        if running is not None:
            return asyncio.ensure_future(self._duplicate_of(running))
        loop = asyncio.get_running_loop()
        if live.seen_event(node.id, event.id):
            self.stats.inc("alert_events_duplicate", help="Alert events ignored as duplicates")
            done = loop.create_future()
            done.set_result(False)
            return done
        try:
            applied = live.record_event(node.id, event)
        except BaseException:
            live.unsee(node.id, event.id)
            raise
        self.stats.inc(
            "alert_events",
            help="Alert events taken over, by status",
            status=event.status if applied else "stale",
        )
        if not applied or not self.sinks:
            done = loop.create_future()
            done.set_result(True)
            return done
        task = loop.create_task(self._settle(node, event))
        self._inflight[key] = task
        task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return task

    async def submit(self, node: NodeRef, event: AlertEvent) -> bool:
        """Take over one event and wait until its sinks settled; False for a duplicate id."""
        return await self.start(node, event)

    async def resync(self, node: NodeRef, events: Iterable[AlertEvent]) -> int:
        """Learn the still-firing alerts a hello named, delivering nothing (see the module
        docstring); returns how many were new to live state."""
        live = self.live
        if node.id not in live:
            live.track(node)
        learned = 0
        for event in events:
            if not live.resync(node.id, event):
                continue
            try:
                for learner in self.learners:
                    await learner(node, event)
            except BaseException:
                live.unresync(node.id, event)
                raise
            learned += 1
        if learned:
            self.stats.inc(
                "alert_events_resynced", learned, help="Firing alerts learned from hellos"
            )
        return learned

    async def _settle(self, node: NodeRef, event: AlertEvent) -> bool:
        try:
            for sink in self.sinks:
                await sink(node, event)
        except BaseException:
            self.live.unsee(node.id, event.id)
            raise
        return True

    async def _duplicate_of(self, running: asyncio.Task[bool]) -> bool:
        self.stats.inc("alert_events_duplicate", help="Alert events ignored as duplicates")
        await asyncio.shield(running)
        return False

    async def close(self) -> None:
        """Cancel what is still in flight (shutdown): those events stay unacked, so the agents
        resend them to the next server."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
