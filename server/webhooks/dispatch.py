"""Alert events → the account's matching endpoints: the Dispatcher's webhook sink.

    webhooks = WebhookDispatch(store, engine, live, clock, public_url=..., repeat_interval=...)
    dispatcher.sinks.append(webhooks)          # awaited per event: returns once all settled

Rules:

- A **firing** event goes to every enabled endpoint whose filters match (severity, node, rule);
  where it went is remembered per alert (node + fingerprint).
- A **resolved** event goes where its firing went (even if the filters changed since), to
  those endpoints still enabled; if the firing is unknown (the server restarted in between),
  to the endpoints whose filters match.
- **Never twice**: each delivery's ``webhook-id`` is derived from endpoint, event id and
  reminder number (``signing.message_id``), so it is the same on every retry and after a
  restart; an id already delivered (or in flight) from this process is not sent again. A
  receiver deduping on ``webhook-id`` sees every alert exactly once.
- **Order**: deliveries of one alert to one endpoint run one after another (firing before
  resolved), each waiting for the previous one to end.
- **Reminders**: an alert still firing ``repeat_interval`` seconds after its last notice is
  sent again (``repeat`` = 1, 2, …) to where the firing went; 0 turns reminders off.
- **Resync** (``learn``, a Dispatcher learner): a firing alert an agent's hello names after a
  server restart is routed as its firing event was (the endpoints whose filters match now) and
  nothing is sent; its reminders resume ``repeat_interval`` after the hello (no storm after a
  restart), numbered past those an earlier process can have sent, so their webhook-ids are new.
- **Durable for opted-in accounts** (saved monitoring covers the node): the deliveries are
  written to the delivery queue first and the sink returns then — the agent's event is acked
  once it is durably queued — while the deliveries go on; each queue row is deleted when its
  delivery ends. ``resume()`` at start-up sends what a previous process left queued. Without
  saved monitoring nothing is written and the sink returns when every delivery ended.

The account's endpoints are cached for ``CACHE_SECONDS`` (the API invalidates on every
change); if storage is unreachable a cached list is used, and without one the sink raises, so
the event stays unacked and the agent resends it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agent.protocol import AlertEvent
from server.clock import Clock
from server.errors import Unavailable
from server.live import LiveState
from server.storage.monitoring import QueuedDelivery
from server.storage.records import NodeRef
from server.storage.store import Store
from server.storage.webhooks import WebhookEndpoint
from server.webhooks.delivery import DeliveryEngine, Outcome
from server.webhooks.formats import Notice
from server.webhooks.signing import message_id

if TYPE_CHECKING:
    from server.saved import SavedMonitoring

log = logging.getLogger("oneconnect.server.webhooks")

CACHE_SECONDS: Final = 30.0
MAX_SENT_IDS: Final = 200_000
"""webhook-ids remembered as sent (an LRU), far more than a restart's worth of resends."""
MAX_ROUTES: Final = 100_000
REMIND_TICK: Final = 30.0
QUEUE_DAYS: Final = 2.0
"""A queued delivery older than this is dropped by the purge (it would be stale news)."""


@dataclass(slots=True)
class _Route:
    """Where one firing alert went, for its resolved event and reminders."""

    node: NodeRef
    event: AlertEvent
    endpoint_ids: tuple[str, ...]
    last_sent: float
    repeats: int = 0


class WebhookDispatch:
    def __init__(
        self,
        store: Store,
        engine: DeliveryEngine,
        live: LiveState,
        clock: Clock,
        *,
        public_url: str | None = None,
        repeat_interval: float = 4 * 3600.0,
    ) -> None:
        self.store = store
        self.engine = engine
        self.live = live
        self.clock = clock
        self.public_url = public_url
        self.repeat_interval = repeat_interval
        self._cache: dict[str, tuple[float, list[WebhookEndpoint]]] = {}
        self._routes: OrderedDict[tuple[str, str], _Route] = OrderedDict()
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._chains: dict[tuple[str, str, str], asyncio.Task[Outcome]] = {}
        self.saved: SavedMonitoring | None = None
        """Set by the app: decides which deliveries are queued durably."""
        self._cleanup: set[asyncio.Task[Any]] = set()

    # -- endpoints ---------------------------------------------------------------------------
    async def endpoints(self, account_id: str) -> list[WebhookEndpoint]:
        """The account's endpoints, cached for CACHE_SECONDS."""
        now = self.clock.monotonic()
        cached = self._cache.get(account_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            found = await self.store.webhooks(account_id)
        except Unavailable:
            if cached is None:
                raise
            log.warning("storage unreachable: using the cached webhook endpoints")
            return cached[1]
        self._cache[account_id] = (now, found)
        return found

    def invalidate(self, account_id: str) -> None:
        self._cache.pop(account_id, None)

    def forget_node(self, node_id: str) -> None:
        for key in [k for k in self._routes if k[0] == node_id]:
            del self._routes[key]

    # -- the sink ----------------------------------------------------------------------------
    async def __call__(self, node: NodeRef, event: AlertEvent) -> None:
        endpoints = [e for e in await self.endpoints(node.account_id) if e.enabled]
        key = (node.id, event.fingerprint)
        if event.status == "resolved":
            route = self._routes.pop(key, None)
            if route is not None:
                targets = [e for e in endpoints if e.id in route.endpoint_ids]
            else:
                targets = [e for e in endpoints if e.filters.matches(node.id, event)]
        else:
            targets = [e for e in endpoints if e.filters.matches(node.id, event)]
            self._route(node, event, targets, repeats=0)
        started = [(e, t) for e in targets if (t := self._send(node, event, e, 0)) is not None]
        if not started:
            return
        if self.saved is not None and self.saved.covers(node):
            try:
                await self._queue(node, event, started)
            except Unavailable:
                log.warning("delivery queue unreachable: waiting for the deliveries instead")
            else:
                return
        await asyncio.gather(*(task for _, task in started))

    async def learn(self, node: NodeRef, event: AlertEvent) -> None:
        """Dispatcher learner: a firing alert resynced from a hello (an earlier process
        delivered it). It is routed as a firing event would be, and nothing is sent or queued;
        the next reminder is due ``repeat_interval`` from now, numbered after the reminders the
        earlier process can have sent since ``event.ts`` (so no reminder reuses a webhook-id)."""
        try:
            endpoints = await self.endpoints(node.account_id)
        except Unavailable:
            log.warning("storage unreachable: a resynced alert gets no reminders")
            return
        if self.live.current_alert(node.id, event.fingerprint) is not event:
            return  # resolved (or replaced) while the endpoints were read
        targets = [e for e in endpoints if e.enabled and e.filters.matches(node.id, event)]
        self._route(node, event, targets, repeats=self._reminders_since(event.ts))

    def _reminders_since(self, ts: float) -> int:
        if self.repeat_interval <= 0:
            return 0
        return int(max(0.0, self.clock.time() - ts) // self.repeat_interval)

    def _route(
        self, node: NodeRef, event: AlertEvent, targets: list[WebhookEndpoint], *, repeats: int
    ) -> None:
        """Remember where a firing alert goes (its resolved event and reminders), sent now."""
        key = (node.id, event.fingerprint)
        route = _Route(node, event, tuple(e.id for e in targets), self.clock.time(), repeats)
        self._routes[key] = route
        self._routes.move_to_end(key)
        if len(self._routes) > MAX_ROUTES:
            self._routes.popitem(last=False)

    async def _queue(
        self,
        node: NodeRef,
        event: AlertEvent,
        started: list[tuple[WebhookEndpoint, asyncio.Task[Outcome]]],
    ) -> None:
        now = self.clock.time()
        rows = [
            QueuedDelivery(
                account_id=node.account_id,
                msg_id=message_id(endpoint.id, event.id),
                endpoint_id=endpoint.id,
                node_id=node.id,
                notice={"event": event.model_dump(mode="json"), "node_name": node.name},
                created_at=now,
                expires_at=now + QUEUE_DAYS * 86400,
            )
            for endpoint, _ in started
        ]
        await self.store.queue_put(rows)
        for row, (_, task) in zip(rows, started, strict=True):
            task.add_done_callback(functools.partial(self._dequeue, msg_id=row.msg_id))

    def _dequeue(self, done: asyncio.Task[Outcome], msg_id: str) -> None:
        if done.cancelled():  # shutdown: the row stays for the next process
            return
        task = asyncio.get_running_loop().create_task(self.store.queue_delete([msg_id]))
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)

    async def resume(self) -> int:
        """Start the deliveries a previous process left in the queue; returns how many."""
        rows = await self.store.queue_pending()
        if not rows:
            return 0
        endpoints = {
            e.id: e for e in await self.store.webhooks_of(sorted({r.account_id for r in rows}))
        }
        resumed = 0
        for row in rows:
            endpoint = endpoints.get(row.endpoint_id)
            try:
                event = AlertEvent.model_validate(row.notice["event"])
                name = str(row.notice["node_name"])
            except (KeyError, ValueError):
                endpoint = None
            if endpoint is None or not endpoint.enabled:
                await self.store.queue_delete([row.msg_id])
                continue
            node = NodeRef(row.node_id, row.account_id, name, 0.0)
            task = self._send(node, event, endpoint, 0)
            if task is not None:
                task.add_done_callback(functools.partial(self._dequeue, msg_id=row.msg_id))
                resumed += 1
        if resumed:
            log.info("resumed %d queued webhook deliveries", resumed)
        return resumed

    def _send(
        self, node: NodeRef, event: AlertEvent, endpoint: WebhookEndpoint, repeat: int
    ) -> asyncio.Task[Outcome] | None:
        msg_id = message_id(endpoint.id, event.id, repeat)
        if msg_id in self._sent:
            self._sent.move_to_end(msg_id)
            return None
        self._sent[msg_id] = None
        if len(self._sent) > MAX_SENT_IDS:
            self._sent.popitem(last=False)
        notice = Notice(
            event=event,
            node_id=node.id,
            node_name=node.name,
            sent_at=self.clock.time(),
            endpoint_id=endpoint.id,
            endpoint_name=endpoint.name,
            repeat=repeat,
            routing_key=endpoint.routing_key,
            public_url=self.public_url,
        )
        chain = (endpoint.id, node.id, event.fingerprint)
        task = self.engine.deliver(endpoint, notice, msg_id, after=self._chains.get(chain))
        self._chains[chain] = task

        def unchain(done: asyncio.Task[Outcome]) -> None:
            if self._chains.get(chain) is done:
                del self._chains[chain]
            if done.cancelled():  # shutdown: a later process may send it again
                self._sent.pop(msg_id, None)

        task.add_done_callback(unchain)
        return task

    # -- reminders ---------------------------------------------------------------------------
    async def remind_due(self) -> int:
        """Send the reminders that are due now; returns how many deliveries started."""
        if self.repeat_interval <= 0:
            return 0
        now = self.clock.time()
        started = 0
        for key, route in list(self._routes.items()):
            if now - route.last_sent < self.repeat_interval:
                continue
            firing = {e.fingerprint for e in self.live.current_alerts(route.node.id)}
            if route.event.fingerprint not in firing:  # resolved meanwhile, or node forgotten
                self._routes.pop(key, None)
                continue
            route.repeats += 1
            route.last_sent = now
            try:
                endpoints = await self.endpoints(route.node.account_id)
            except Unavailable:
                continue
            for endpoint in endpoints:
                if not endpoint.enabled or endpoint.id not in route.endpoint_ids:
                    continue
                if self._send(route.node, route.event, endpoint, route.repeats) is not None:
                    started += 1
        return started

    async def run_reminders(self) -> None:
        """Forever: send due reminders every REMIND_TICK seconds."""
        while True:
            await asyncio.sleep(REMIND_TICK)
            try:
                await self.remind_due()
            except Exception as exc:  # never let one bad pass end reminders for good
                log.error("webhook reminders failed this pass (%s)", exc.__class__.__name__)
