"""Saved monitoring's records of alerts and their delivery (opt-in only): alert history,
webhook delivery attempts and the durable delivery queue.

    await store.write_alerts([AlertRow.of(account_id, node_id, event, expires_at)])
    await store.alert_history(node_ids, start, end, limit=500)    # newest first
    await store.write_attempts([AttemptRow(...)]); await store.attempts(endpoint_id)
    await store.queue_put([QueuedDelivery(...)]); await store.queue_pending()
    await store.queue_delete([msg_id])

Every write passes the consent guard (:mod:`server.storage.consent_guard`) in its own
transaction: alert history and queued deliveries need the consent to cover their node (and a
queued delivery's endpoint to be the account's), attempts need the account's consent and its
own endpoint. Rows expire at their ``expires_at`` (``MonitoringStore.purge``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from server.security import new_id
from server.storage.base import StoreBase, shielded
from server.storage.consent_guard import chunks, read_guard
from server.storage.monitored import AlertRow, AttemptRow, QueuedDelivery
from server.storage.schema import (
    alert_history,
    delivery_attempts,
    delivery_queue,
    webhook_endpoints,
)


def dialect_insert(conn: AsyncConnection, table: Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT."""
    return pg_insert(table) if conn.dialect.name == "postgresql" else sqlite_insert(table)


class AlertLogStore(StoreBase):
    # -- alert history -----------------------------------------------------------------------
    @shielded
    async def write_alerts(self, rows: Sequence[AlertRow]) -> int:
        """Alert events into alert history (a repeated ``(node_id, event_id)`` is ignored);
        return how many were new."""
        if not rows:
            return 0
        async with self._tx(write=True) as conn:
            guard = await read_guard(conn, {r.account_id for r in rows}, {r.node_id for r in rows})
            values: dict[tuple[str, str], dict[str, Any]] = {}
            for r in rows:
                if guard.node_days(r.account_id, r.node_id):
                    values.setdefault((r.node_id, r.event_id), _alert_values(r))
            if not values:
                return 0
            stmt = dialect_insert(conn, alert_history).on_conflict_do_nothing(
                index_elements=["node_id", "event_id"]
            )
            result = await conn.execute(
                stmt.returning(alert_history.c.event_id), list(values.values())
            )
            return len(result.all())

    @shielded
    async def alert_history(
        self, node_ids: Sequence[str], start: float, end: float, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Alert events of these nodes with ``start <= ts <= end``, newest first: the
        AlertEvent fields (``id`` is the event id) and ``node_id``."""
        t = alert_history
        found: list[dict[str, Any]] = []
        async with self._tx() as conn:
            for chunk in chunks(sorted(set(node_ids))):
                rows = await conn.execute(
                    select(*[c for c in t.c if c.name != "expires_at"])
                    .where(t.c.node_id.in_(chunk), t.c.ts >= start, t.c.ts <= end)
                    .order_by(t.c.ts.desc(), t.c.event_id)
                    .limit(limit)
                )
                found.extend(_alert_of(row._mapping) for row in rows)
        found.sort(key=lambda a: (-a["ts"], a["id"]))
        return found[:limit]

    # -- delivery attempts -------------------------------------------------------------------
    @shielded
    async def write_attempts(self, rows: Sequence[AttemptRow]) -> int:
        """Delivery attempts of consenting accounts' own endpoints; return how many."""
        if not rows:
            return 0
        async with self._tx(write=True) as conn:
            guard = await read_guard(
                conn, {r.account_id for r in rows}, endpoint_ids={r.endpoint_id for r in rows}
            )
            values = [
                {
                    "id": new_id(),
                    "endpoint_id": r.endpoint_id,
                    "msg_id": r.msg_id,
                    "attempt": r.attempt,
                    "at": r.at,
                    "status": r.status,
                    "latency_ms": r.latency_ms,
                    "outcome": r.outcome,
                    "detail": r.detail[:200],
                    "expires_at": r.expires_at,
                }
                for r in rows
                if guard.endpoints.get(r.endpoint_id) == r.account_id
            ]
            if values:
                await conn.execute(delivery_attempts.insert(), values)
        return len(values)

    @shielded
    async def attempts(self, endpoint_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The endpoint's latest attempts, newest first (every column but ``expires_at``)."""
        t = delivery_attempts
        async with self._tx() as conn:
            rows = await conn.execute(
                select(*[c for c in t.c if c.name != "expires_at"])
                .where(t.c.endpoint_id == endpoint_id)
                .order_by(t.c.at.desc(), t.c.attempt.desc(), t.c.id)
                .limit(limit)
            )
            return [dict(row._mapping) for row in rows]

    # -- the durable delivery queue ----------------------------------------------------------
    @shielded
    async def queue_put(self, rows: Sequence[QueuedDelivery]) -> int:
        """Queue deliveries whose node the consent covers and whose endpoint is the account's
        (a repeated ``msg_id`` is ignored); return how many were new."""
        if not rows:
            return 0
        async with self._tx(write=True) as conn:
            guard = await read_guard(
                conn,
                {r.account_id for r in rows},
                {r.node_id for r in rows},
                {r.endpoint_id for r in rows},
            )
            values: dict[str, dict[str, Any]] = {}
            for r in rows:
                if guard.node_days(r.account_id, r.node_id) and (
                    guard.endpoints.get(r.endpoint_id) == r.account_id
                ):
                    values.setdefault(r.msg_id, _queued_values(r))
            if not values:
                return 0
            stmt = dialect_insert(conn, delivery_queue).on_conflict_do_nothing(
                index_elements=["msg_id"]
            )
            result = await conn.execute(
                stmt.returning(delivery_queue.c.msg_id), list(values.values())
            )
            return len(result.all())

    @shielded
    async def queue_delete(self, msg_ids: Sequence[str]) -> int:
        deleted = 0
        async with self._tx(write=True) as conn:
            for chunk in chunks(sorted(set(msg_ids))):
                result = await conn.execute(
                    delete(delivery_queue).where(delivery_queue.c.msg_id.in_(chunk))
                )
                deleted += result.rowcount
        return deleted

    @shielded
    async def queue_pending(self, limit: int = 10_000) -> list[QueuedDelivery]:
        """Queued deliveries, oldest first. A plain read: one process resumes the queue at
        start-up. (Several workers sharing the queue would claim rows with ``FOR UPDATE SKIP
        LOCKED`` instead.)"""
        q = delivery_queue
        async with self._tx() as conn:
            rows = await conn.execute(
                select(q, webhook_endpoints.c.account_id)
                .join(webhook_endpoints, webhook_endpoints.c.id == q.c.endpoint_id)
                .order_by(q.c.created_at, q.c.msg_id)
                .limit(limit)
            )
            return [
                QueuedDelivery(
                    account_id=r.account_id,
                    msg_id=r.msg_id,
                    endpoint_id=r.endpoint_id,
                    node_id=r.node_id,
                    notice=dict(r.notice),
                    created_at=r.created_at,
                    expires_at=r.expires_at,
                )
                for r in rows
            ]


def _alert_values(r: AlertRow) -> dict[str, Any]:
    return {
        "node_id": r.node_id,
        "event_id": r.event_id,
        "fingerprint": r.fingerprint,
        "rule": r.rule,
        "status": r.status,
        "severity": r.severity,
        "metric": r.metric,
        "labels": dict(r.labels),
        "value": r.value,
        "threshold": r.threshold,
        "summary": r.summary,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "ts": r.ts,
        "expires_at": r.expires_at,
    }


def _alert_of(row: Mapping[Any, Any]) -> dict[str, Any]:
    alert = dict(row)
    alert["id"] = alert.pop("event_id")
    return alert


def _queued_values(r: QueuedDelivery) -> dict[str, Any]:
    return {
        "msg_id": r.msg_id,
        "endpoint_id": r.endpoint_id,
        "node_id": r.node_id,
        "notice": r.notice,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
    }
