"""Helpers for the data-rights tests: accounts, nodes and endpoints made through the Store, and
monitored rows inserted directly (plain SQLAlchemy inserts) into every MONITORED_TABLES table.

On PostgreSQL the big tables are partitioned by retention; the rows here use a retention class
of their own (``RETENTION``) with one plain partition each, so they need nothing of the
partition manager and cannot collide with its ``_r<days>`` partitions."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, text

from server.security import new_api_key, new_id, new_node_token
from server.storage.records import Account
from server.storage.schema import (
    MONITORED_TABLES,
    alert_history,
    delivery_attempts,
    delivery_queue,
    metadata,
    metric_points,
    metric_rollups,
)
from server.storage.store import Filters, Store
from tests.server.accounts_kit import all_rows

NOW = 1_800_000_000.0
RETENTION = 7
PW_HASH = "scrypt$16384$8$1$c2FsdA$aGFzaA"  # shape only; never verified here


@dataclass(frozen=True)
class Seeded:
    account: Account
    api_key: str
    node_ids: tuple[str, ...]
    endpoint_ids: tuple[str, ...]
    urls: tuple[str, ...]
    secrets: tuple[str, ...]
    """API key, node tokens, webhook secrets and routing keys: never in an export."""

    @property
    def id(self) -> str:
        return self.account.id


async def seed_account(
    store: Store,
    *,
    plan: str = "pro",
    nodes: int = 2,
    endpoints: int = 1,
    now: float = NOW,
) -> Seeded:
    """An account with a unique name and e-mail, ``nodes`` nodes and ``endpoints`` webhook
    endpoints (made through the Store: no SSRF check, no DNS)."""
    tag = secrets.token_hex(4)
    key = new_api_key()
    account, _ = await store.create_account(
        name=f"Person {tag}",
        email=f"person-{tag}@example.com",
        company=f"Company {tag}",
        password_hash=PW_HASH,
        plan=plan,
        api_key=key,
        key_name="default",
        now=now,
    )
    node_ids, tokens = [], []
    for i in range(nodes):
        token = new_node_token()
        node = await store.create_node(account.id, name=f"vpn-{tag}-{i}", token=token, now=now)
        node_ids.append(node.id)
        tokens.append(token)
    endpoint_ids, urls, hook_secrets = [], [], []
    for i in range(endpoints):
        url = f"https://hooks-{tag}.example.com/services/T{tag}/B{i}/xyzsecretpath{tag}"
        secret = "whsec_" + secrets.token_urlsafe(24)
        routing_key = f"rk{tag}{i}" + secrets.token_hex(8)
        endpoint = await store.create_webhook(
            account.id,
            name=f"hook-{i}",
            url=url,
            format="generic",
            enabled=True,
            filters=Filters(),
            routing_key=routing_key,
            secret=secret,
            now=now,
        )
        endpoint_ids.append(endpoint.id)
        urls.append(url)
        hook_secrets += [secret, routing_key]
    return Seeded(
        account, key, tuple(node_ids), tuple(endpoint_ids), tuple(urls),
        (key, *tokens, *hook_secrets),
    )  # fmt: skip


async def ensure_partitions(store: Store) -> None:
    """PostgreSQL: a plain partition of each partitioned table for ``RETENTION``."""
    if store.engine.dialect.name != "postgresql":
        return
    async with store.engine.begin() as conn:
        for table in ("metric_points", "metric_rollups"):
            await conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {table}_test{RETENTION} "
                    f"PARTITION OF {table} FOR VALUES IN ({RETENTION})"
                )
            )


async def seed_monitored(
    store: Store,
    node_ids: Sequence[str],
    endpoint_ids: Sequence[str],
    *,
    now: float = NOW,
    points: int = 2,
) -> None:
    """Rows in every monitored table: per node ``points`` raw points, a rollup, an alert and
    a queued delivery (to the first endpoint); per endpoint a delivery attempt."""
    await ensure_partitions(store)
    expires = now + RETENTION * 86_400
    rows: dict[Any, list[dict[str, Any]]] = {table: [] for table in MONITORED_TABLES}
    for node_id in node_ids:
        for i in range(points):
            rows[metric_points].append(
                {"node_id": node_id, "metric": "cpu_percent", "labels": "", "ts": now + i,
                 "value": 10.0 + i, "retention_days": RETENTION}
            )  # fmt: skip
        rows[metric_rollups].append(
            {"node_id": node_id, "metric": "cpu_percent", "labels": "", "resolution": 60,
             "bucket": now, "min": 1.0, "max": 3.0, "sum": 4.0, "count": 2,
             "retention_days": RETENTION}
        )  # fmt: skip
        rows[alert_history].append(
            {"node_id": node_id, "event_id": new_id(), "fingerprint": new_id()[:16],
             "rule": "cpu_high", "status": "firing", "severity": "warning",
             "metric": "cpu_percent", "labels": {}, "value": 97.5, "threshold": 90.0,
             "summary": "CPU high", "started_at": now, "ended_at": None, "ts": now,
             "expires_at": expires}
        )  # fmt: skip
        if endpoint_ids:
            rows[delivery_queue].append(
                {"msg_id": "msg_" + new_id(), "endpoint_id": endpoint_ids[0],
                 "node_id": node_id, "notice": {"rule": "cpu_high"}, "created_at": now,
                 "expires_at": expires}
            )  # fmt: skip
    for endpoint_id in endpoint_ids:
        rows[delivery_attempts].append(
            {"id": new_id(), "endpoint_id": endpoint_id, "msg_id": "msg_" + new_id(),
             "attempt": 1, "at": now, "status": 200, "latency_ms": 12.5,
             "outcome": "delivered", "detail": "", "expires_at": expires}
        )  # fmt: skip
    async with store.engine.begin() as conn:
        for table, values in rows.items():
            if values:
                await conn.execute(insert(table), values)


async def monitored_counts(store: Store) -> dict[str, int]:
    """Rows per monitored table, over every account."""
    counts: dict[str, int] = {}
    async with store.engine.connect() as conn:
        for table in MONITORED_TABLES:
            counts[table.name] = int(
                await conn.scalar(select(func.count()).select_from(table)) or 0
            )
    return counts


async def node_rows(store: Store, node_id: str) -> int:
    """Monitored rows naming this node (tables with a node_id column)."""
    total = 0
    async with store.engine.connect() as conn:
        for table in MONITORED_TABLES:
            if "node_id" in table.c:
                total += int(
                    await conn.scalar(
                        select(func.count()).select_from(table).where(table.c.node_id == node_id)
                    )
                    or 0
                )
    return total


def identifying(seeded: Seeded) -> list[str]:
    """Everything that would identify the account in a row: id, e-mail, name, company, node
    ids, endpoint ids and URLs."""
    account = seeded.account
    return [
        account.id, account.email, account.name, account.company or "", *seeded.node_ids,
        *seeded.endpoint_ids, *seeded.urls,
    ]  # fmt: skip


async def mentions(
    store: Store, needles: Sequence[str], *, ignore: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """(table, needle) for every needle found in any row of any table; a column named in
    ``ignore`` as (table, column) is not looked at."""
    rows = await all_rows(store)
    columns = {table.name: [c.name for c in table.columns] for table in metadata.sorted_tables}
    found = []
    for table, table_rows in rows.items():
        skip = {i for i, name in enumerate(columns[table]) if (table, name) in ignore}
        for row in table_rows:
            for i, value in enumerate(row):
                if i in skip:
                    continue
                for needle in needles:
                    if needle and needle in str(value):
                        found.append((table, needle))
    return sorted(set(found))
