"""Alert dispatch: the one path every alert event takes — agents' events (from ingest) and the
server's own ``node_down`` events (from the node-down detector).

    fresh = await dispatcher.submit(node, event)   # False: a duplicate id (still to be acked)

``submit`` dedupes by event id per node, records the event in live state (firing adds or
updates the current alert of its fingerprint, resolved removes it), counts it, then awaits every
sink in ``sinks`` in order. When ``submit`` returns, the event is taken over: the ingest acks it
then.

Sinks are the seam for webhook delivery (issue 4): ``async sink(node, event)``. None are
installed yet, so today an event ends in live state. A sink that raises makes ``submit`` raise
and forgets the id again, so the agent's resend is handled afresh (not acked as a duplicate).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agent.protocol import AlertEvent
from server.live import LiveState
from server.stats import Stats
from server.storage.records import NodeRef

EventSink = Callable[[NodeRef, AlertEvent], Awaitable[None]]


class Dispatcher:
    def __init__(self, live: LiveState, stats: Stats) -> None:
        self.live = live
        self.stats = stats
        self.sinks: list[EventSink] = []
        """Awaited in order for every new event (webhook delivery plugs in here)."""

    async def submit(self, node: NodeRef, event: AlertEvent) -> bool:
        """Take over one event; False if its id was already seen for this node."""
        live = self.live
        if node.id not in live:
            live.track(node)
        if live.seen_event(node.id, event.id):
            self.stats.inc("alert_events_duplicate", help="Alert events ignored as duplicates")
            return False
        try:
            applied = live.record_event(node.id, event)
            for sink in self.sinks:
                await sink(node, event)
        except BaseException:
            live.unsee(node.id, event.id)
            raise
        self.stats.inc(
            "alert_events",
            help="Alert events taken over, by status",
            status=event.status if applied else "stale",
        )
        return True
