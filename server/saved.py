"""Saved monitoring (ARCHITECTURE.md §8), the server side: what opted-in accounts have persisted.

    saved = SavedMonitoring(store, clock, stats)
    await saved.load()                    # the consents, into memory
    saved.frame(node, metrics)            # ingest, per metrics frame: O(1) when not opted in
    await saved.alert(node, event)        # a Dispatcher sink: alert history
    saved.attempt(endpoint, log)          # the delivery engine's attempt hook

Nothing is buffered, let alone written, for an account without consent: ``frame``, ``alert``
and ``attempt`` return at once unless the in-memory consent covers the node (or, for
attempts, the account). The store's write methods check the consent again inside their own
transaction (the last line of defence: an opt-out on another replica, a stale cache), so a
row can only exist while the consent row does.

Points are stamped with the server's clock at receipt (an agent's clock may be wrong, and
must not choose which day partition a row lands in), buffered, and written every
``FLUSH_SECONDS`` in one batch per table; per-minute and per-hour rollups are accumulated in
memory and written when their bucket closes (a partial bucket is written at shutdown, and the
store merges it with the rest after a restart). The buffer is bounded (``MAX_PENDING``
points); past it points are dropped and counted, never blocking ingest.

``run`` is the background job: flushes, and every ``PURGE_SECONDS`` the retention purge and the
end of expired legal holds; at its first purge and every ``RECLASS_CHECK_SECONDS`` after, it
first re-classes the rows of a plan change whose reclass never ran (a crash in between, or
storage down then). That check probes every node's rows, so it runs far less often than the
purge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from agent.protocol import AlertEvent, MetricsFrame
from server.clock import Clock
from server.errors import Unavailable
from server.plans import get_plan
from server.shapes import ShapedFrame
from server.stats import Stats
from server.storage.monitoring import (
    AlertRow,
    AttemptRow,
    Point,
    RollupAccumulator,
    series_labels,
    stored_value,
)
from server.storage.records import NodeRef
from server.storage.store import Store
from server.storage.webhooks import WebhookEndpoint

log = logging.getLogger("oneconnect.server.saved")

FLUSH_SECONDS: Final = 1.0
PURGE_SECONDS: Final = 600.0
RECLASS_CHECK_SECONDS: Final = 6 * 3600.0
MAX_PENDING: Final = 2_000_000
"""Buffered points at most (~40 s of a 1,000-node, 50-series fleet at 1 s)."""
DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class Consent:
    nodes: frozenset[str] | None
    """The chosen nodes, or None for every node of the account."""
    retention_days: int

    def covers(self, node_id: str) -> bool:
        return self.retention_days > 0 and (self.nodes is None or node_id in self.nodes)


class SavedMonitoring:
    def __init__(self, store: Store, clock: Clock, stats: Stats) -> None:
        self.store = store
        self.clock = clock
        self.stats = stats
        self._consents: dict[str, Consent] = {}
        self._points: list[Point] = []
        self._alerts: list[AlertRow] = []
        self._attempts: list[AttemptRow] = []
        self._rollups = RollupAccumulator()
        self._flushing = asyncio.Lock()
        self._next_reclass_check = -float("inf")
        stats.gauge(
            "saved_pending_points",
            "Points of opted-in accounts waiting to be written",
            lambda: float(len(self._points)),
        )

    # -- consent -----------------------------------------------------------------------------
    async def load(self) -> None:
        """Every consent into memory (start-up)."""
        consents = await self.store.consents()
        loaded: dict[str, Consent] = {}
        for account_id, nodes in consents.items():
            consent = await self._consent_of(account_id, nodes)
            if consent is not None:
                loaded[account_id] = consent
        self._consents = loaded

    async def consent_changed(self, account_id: str) -> None:
        """The account's consent or plan changed: read it again. Opting out (or narrowing
        the nodes) takes effect here at once: what is buffered for the nodes no longer
        covered — points, open rollup buckets, alerts, attempts — is dropped, not written."""
        consents = await self.store.consents()
        consent = None
        if account_id in consents:
            consent = await self._consent_of(account_id, consents[account_id])
        if consent is None:
            self._consents.pop(account_id, None)
        else:
            self._consents[account_id] = consent
        self._points = [p for p in self._points if self._keeps(p.account_id, p.node_id)]
        self._rollups.discard(self._keeps)
        self._alerts = [a for a in self._alerts if self._keeps(a.account_id, a.node_id)]
        self._attempts = [a for a in self._attempts if a.account_id in self._consents]

    async def _consent_of(self, account_id: str, nodes: Iterable[str] | None) -> Consent | None:
        account = await self.store.account(account_id)
        if account is None:
            return None
        retention = get_plan(account.plan).retention_days
        if retention <= 0:
            return None
        return Consent(None if nodes is None else frozenset(nodes), retention)

    def _keeps(self, account_id: str, node_id: str) -> bool:
        consent = self._consents.get(account_id)
        return consent is not None and consent.covers(node_id)

    def covers(self, node: NodeRef) -> bool:
        """True if the node's account saves monitoring for this node."""
        return self._keeps(node.account_id, node.id)

    def covers_account(self, account_id: str) -> bool:
        return account_id in self._consents

    def retention_days(self, account_id: str) -> int:
        consent = self._consents.get(account_id)
        return consent.retention_days if consent else 0

    # -- what is saved -----------------------------------------------------------------------
    def frame(self, node: NodeRef, frame: MetricsFrame | ShapedFrame) -> None:
        consent = self._consents.get(node.account_id)
        if consent is None or not consent.covers(node.id):
            return
        if len(self._points) + len(frame.samples) > MAX_PENDING:
            self.stats.inc(
                "saved_points_dropped",
                len(frame.samples),
                help="Points of opted-in accounts dropped because the write buffer was full",
            )
            return
        now = self.clock.time()
        retention = consent.retention_days
        for sample in frame.samples:
            point = Point(
                node.account_id,
                node.id,
                sample["m"],
                series_labels(sample.get("l") or {}),
                now,
                stored_value(sample["v"]),
            )
            self._points.append(point)
            self._rollups.add(point, retention)

    async def alert(self, node: NodeRef, event: AlertEvent) -> None:
        """Dispatcher sink: the event into alert history (opted-in nodes only)."""
        consent = self._consents.get(node.account_id)
        if consent is None or not consent.covers(node.id):
            return
        expires = self.clock.time() + consent.retention_days * DAY
        self._alerts.append(AlertRow.of(node.account_id, node.id, event, expires))

    def attempt(self, endpoint: WebhookEndpoint, entry: Any) -> None:
        """Delivery engine hook: one attempt (status, latency, outcome — no bodies)."""
        consent = self._consents.get(endpoint.account_id)
        if consent is None:
            return
        self._attempts.append(
            AttemptRow(
                account_id=endpoint.account_id,
                endpoint_id=endpoint.id,
                msg_id=entry.msg_id,
                attempt=entry.number,
                at=entry.at,
                status=entry.status,
                latency_ms=round(entry.latency * 1000, 1),
                outcome=entry.outcome,
                detail=entry.detail[:200],
                expires_at=entry.at + consent.retention_days * DAY,
            )
        )

    # -- writing -----------------------------------------------------------------------------
    async def flush(self, *, final: bool = False) -> dict[str, int]:
        """Write what is buffered; ``final`` also writes rollup buckets still open."""
        async with self._flushing:
            points, self._points = self._points, []
            alerts, self._alerts = self._alerts, []
            attempts, self._attempts = self._attempts, []
            rollups = self._rollups.drain() if final else self._rollups.closed(self.clock.time())
            retention = {a: c.retention_days for a, c in self._consents.items()}
            written = {"points": 0, "rollups": 0, "alerts": 0, "attempts": 0}
            try:
                if points:
                    written["points"] = await self.store.write_points(points, retention)
                if rollups:
                    written["rollups"] = await self.store.write_rollups(rollups)
                if alerts:
                    written["alerts"] = await self.store.write_alerts(alerts)
                if attempts:
                    written["attempts"] = await self.store.write_attempts(attempts)
            except Unavailable:
                log.warning(
                    "storage unreachable: %d saved-monitoring points not written", len(points)
                )
                self.stats.inc(
                    "saved_points_dropped",
                    len(points),
                    help="Points of opted-in accounts dropped because the write buffer was full",
                )
            for kind, count in written.items():
                if count:
                    self.stats.inc(
                        "saved_rows_written",
                        count,
                        help="Saved-monitoring rows written, by kind",
                        kind=kind,
                    )
            return written

    async def purge(self) -> dict[str, int]:
        """The retention purge and the end of expired legal holds, now; first, when that check
        is due, the accounts whose saved rows outlived a plan change are re-classed
        (``reclassed``: how many)."""
        now = self.clock.time()
        reclassed = 0
        if self.clock.monotonic() >= self._next_reclass_check:
            reclassed = await self.store.reclass_stale(now)
            self._next_reclass_check = self.clock.monotonic() + RECLASS_CHECK_SECONDS
        counts = await self.store.purge(now)
        counts["reclassed"] = reclassed
        await self.store.expire_holds(now)
        return counts

    async def run(self) -> None:
        """Forever: flush every FLUSH_SECONDS, purge every PURGE_SECONDS."""
        next_purge = 0.0
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
                if self.clock.monotonic() >= next_purge:
                    next_purge = self.clock.monotonic() + PURGE_SECONDS
                    await self.purge()
            except Exception as exc:  # one bad pass must not end saving for good
                log.error("saved monitoring pass failed (%s)", exc.__class__.__name__)

    async def close(self) -> None:
        """Final flush at shutdown (open rollup buckets included)."""
        try:
            await self.flush(final=True)
        except Exception as exc:
            log.error("final saved-monitoring flush failed (%s)", exc.__class__.__name__)
