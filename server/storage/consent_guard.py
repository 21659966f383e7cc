"""The consent guard of saved monitoring's writes: what may be written, read (and on PostgreSQL
locked) inside the write's own transaction.

    guard = await read_guard(conn, account_ids, node_ids, endpoint_ids)
    guard.node_days(account_id, node_id)   # retention days if allowed, else 0
    guard.endpoints.get(endpoint_id) == account_id

A row is allowed only if its account exists with a plan that includes saved monitoring, the
account has a consent row (``saved_monitoring``), the row's node (or endpoint) belongs to that
account and — for a node — the consent covers it. The retention given is the plan's, as read
here. Rows are locked in this order (PostgreSQL; on SQLite the write transaction is ``BEGIN
IMMEDIATE`` and writers are serialised anyway):

1. accounts ``FOR KEY SHARE`` — a plan change locks the account ``FOR UPDATE``: it waits;
2. ``saved_monitoring`` ``FOR SHARE`` — an opt-out (delete) or a narrowing (update) waits, then
   deletes what the write wrote;
3. nodes and webhook endpoints ``FOR KEY SHARE`` — their deletion waits, then cascades.

A transaction deleting an account's data must lock or delete the ``saved_monitoring`` row
before its nodes and endpoints; otherwise it can deadlock with a write.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.plans import get_plan
from server.storage.schema import accounts, nodes, saved_monitoring, webhook_endpoints

CHUNK: Final = 1000
"""Ids per ``IN (...)`` list (both databases allow far more bind parameters)."""
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for at in range(0, len(items), size):
        yield items[at : at + size]


@dataclass(frozen=True, slots=True)
class Guard:
    days: dict[str, int]
    """account id -> its plan's retention, for consenting accounts whose plan includes it."""
    nodes: dict[str, tuple[str, int]]
    """node id -> (account id, retention days), for nodes the consent covers."""
    endpoints: dict[str, str]
    """endpoint id -> account id, for endpoints of consenting accounts."""

    def node_days(self, account_id: str, node_id: str) -> int:
        """The retention to store the node's row under; 0 if it must not be written."""
        found = self.nodes.get(node_id)
        return found[1] if found is not None and found[0] == account_id else 0


async def read_guard(
    conn: AsyncConnection,
    account_ids: Iterable[str],
    node_ids: Iterable[str] = (),
    endpoint_ids: Iterable[str] = (),
) -> Guard:
    days: dict[str, int] = {}
    for chunk in chunks(sorted(set(account_ids))):
        rows = await conn.execute(
            select(accounts.c.id, accounts.c.plan)
            .where(accounts.c.id.in_(chunk))
            .with_for_update(read=True, key_share=True)
        )
        days.update((r.id, get_plan(r.plan).retention_days) for r in rows)
    consent: dict[str, frozenset[str] | None] = {}
    for chunk in chunks(sorted(a for a, d in days.items() if d > 0)):
        rows = await conn.execute(
            select(saved_monitoring.c.account_id, saved_monitoring.c.nodes)
            .where(saved_monitoring.c.account_id.in_(chunk))
            .with_for_update(read=True)
        )
        for r in rows:
            consent[r.account_id] = None if r.nodes is None else frozenset(map(str, r.nodes))
    days = {a: d for a, d in days.items() if a in consent}
    covered: dict[str, tuple[str, int]] = {}
    owners: dict[str, str] = {}
    if not days:
        return Guard(days, covered, owners)
    for chunk in chunks(sorted(set(node_ids))):
        rows = await conn.execute(
            select(nodes.c.id, nodes.c.account_id)
            .where(nodes.c.id.in_(chunk))
            .with_for_update(read=True, key_share=True)
        )
        for r in rows:
            chosen = consent.get(r.account_id)
            if r.account_id in days and (chosen is None or r.id in chosen):
                covered[r.id] = (r.account_id, days[r.account_id])
    for chunk in chunks(sorted(set(endpoint_ids))):
        rows = await conn.execute(
            select(webhook_endpoints.c.id, webhook_endpoints.c.account_id)
            .where(webhook_endpoints.c.id.in_(chunk))
            .with_for_update(read=True, key_share=True)
        )
        owners.update((r.id, r.account_id) for r in rows if r.account_id in days)
    return Guard(days, covered, owners)
