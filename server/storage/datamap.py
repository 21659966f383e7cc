"""Where an account's data lives, as data: what an export shows of each table, which rows are
the account's, and what each legal-hold category keeps.

Export (``EXPORT``): one :class:`Section` per table with account data, naming the columns left
out and why (credentials only). ``NOT_ACCOUNT_DATA`` names every other table of the schema
and why it is not exported; a test fails when a table is in neither.

Hold categories (``categories.CATEGORIES``): ``SNAPSHOTS`` says how each is copied into
``held_data`` (one JSON snapshot per category of each active hold) when the account is deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import Column, ColumnElement, Select, Table, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage.schema import (
    accounts,
    alert_history,
    api_keys,
    delivery_attempts,
    delivery_queue,
    held_data,
    legal_holds,
    metric_points,
    metric_rollups,
    nodes,
    saved_monitoring,
    sessions,
    webhook_endpoints,
)


def account_nodes(account_id: str) -> Select[tuple[str]]:
    return select(nodes.c.id).where(nodes.c.account_id == account_id)


def account_endpoints(account_id: str) -> Select[tuple[str]]:
    return select(webhook_endpoints.c.id).where(webhook_endpoints.c.account_id == account_id)


def owned(table: Table, account_id: str) -> ColumnElement[bool]:
    """The rows of ``table`` that are the account's: by ``account_id`` (``id`` for accounts),
    else through the account's nodes (``node_id``) and/or webhook endpoints (``endpoint_id``)."""
    if table is accounts:
        return accounts.c.id == account_id
    if "account_id" in table.c:
        return table.c.account_id == account_id
    clauses: list[ColumnElement[bool]] = []
    if "node_id" in table.c:
        clauses.append(table.c.node_id.in_(account_nodes(account_id)))
    if "endpoint_id" in table.c:
        clauses.append(table.c.endpoint_id.in_(account_endpoints(account_id)))
    if not clauses:
        raise TypeError(f"{table.name}: no column ties its rows to an account")
    return or_(*clauses)


# -- export --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Section:
    """One table in the export: its rows of the account, without the ``omitted`` columns,
    read ordered by ``key`` (unique), in pages when ``paged``."""

    table: Table
    key: tuple[str, ...]
    omitted: Mapping[str, str] = field(default_factory=dict)
    """column -> why it is not exported"""
    paged: bool = False

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def columns(self) -> list[Column[Any]]:
        return [c for c in self.table.columns if c.name not in self.omitted]

    @property
    def key_columns(self) -> list[Column[Any]]:
        return [self.table.c[name] for name in self.key]


_CREDENTIAL = "a credential: stored only to check or sign, never shown again"

EXPORT: Final[tuple[Section, ...]] = (
    Section(accounts, ("id",), {"password_hash": _CREDENTIAL}),
    Section(api_keys, ("created_at", "id"), {"key_hash": _CREDENTIAL}),
    Section(sessions, ("created_at", "id_hash"), {"id_hash": _CREDENTIAL}),
    Section(nodes, ("created_at", "id"), {"token_hash": _CREDENTIAL}),
    Section(
        webhook_endpoints,
        ("created_at", "id"),
        {
            "secret": _CREDENTIAL,
            "previous_secret": _CREDENTIAL,
            "routing_key": "a credential (the PagerDuty integration key), never shown again",
        },
    ),
    Section(saved_monitoring, ("account_id",)),
    Section(
        legal_holds,
        ("created_at", "id"),
        {"reason": "operator-internal: may name an open dispute or a fraud investigation"},
    ),
    Section(
        metric_points,
        ("node_id", "metric", "ts", "labels", "retention_days", "value"),
        paged=True,
    ),
    Section(
        metric_rollups,
        ("node_id", "metric", "resolution", "labels", "bucket", "retention_days"),
        paged=True,
    ),
    Section(alert_history, ("node_id", "event_id"), paged=True),
    Section(delivery_attempts, ("id",), paged=True),
    Section(delivery_queue, ("msg_id",), paged=True),
)
"""Every table with account data, in export order. Sessions are shown as their times only
(the digest is omitted): how many there are and when they were created and expire."""

NOT_ACCOUNT_DATA: Final[Mapping[str, str]] = {
    held_data.name: "exists only after the account is deleted (then nothing can be exported); "
    "it is a copy of categories listed above, kept for a legal hold",
    "deletion_requests": "exists only after the account is deleted: the request's id, "
    "status digest, times and state",
}
"""Tables without data of a live account, and why."""


# -- hold categories -------------------------------------------------------------------------
Snapshot = Callable[[AsyncConnection, str], Any]


async def _rows(conn: AsyncConnection, query: Select[Any]) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in await conn.execute(query)]


async def _registration(conn: AsyncConnection, account_id: str) -> Any:
    cols = (accounts.c.name, accounts.c.email, accounts.c.company, accounts.c.created_at)
    rows = await _rows(conn, select(*cols).where(accounts.c.id == account_id))
    return rows[0] if rows else None


async def _plan(conn: AsyncConnection, account_id: str) -> Any:
    plan = await conn.scalar(select(accounts.c.plan).where(accounts.c.id == account_id))
    return {"plan": plan}


async def _consent(conn: AsyncConnection, account_id: str) -> Any:
    rows = await _rows(conn, select(saved_monitoring).where(owned(saved_monitoring, account_id)))
    return rows[0] if rows else None


async def _nodes(conn: AsyncConnection, account_id: str) -> Any:
    cols = (nodes.c.id, nodes.c.name, nodes.c.created_at, nodes.c.enrolled_at)
    query = select(*cols).where(nodes.c.account_id == account_id)
    return await _rows(conn, query.order_by(nodes.c.created_at, nodes.c.id))


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: where deliveries went, without the credential that
    many webhook URLs carry in their path or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


async def _webhooks(conn: AsyncConnection, account_id: str) -> Any:
    t = webhook_endpoints
    cols = (
        t.c.id, t.c.name, t.c.url, t.c.format, t.c.enabled, t.c.disabled_reason, t.c.filters,
        t.c.created_at, t.c.updated_at,
    )  # fmt: skip
    rows = await _rows(
        conn, select(*cols).where(t.c.account_id == account_id).order_by(t.c.created_at, t.c.id)
    )
    for row in rows:
        row["url_origin"] = url_origin(row.pop("url"))
        row["enabled"] = bool(row["enabled"])
    return rows


def _monitored(table: Table, *order: str) -> Snapshot:
    async def snapshot(conn: AsyncConnection, account_id: str) -> Any:
        query = select(table).where(owned(table, account_id))
        return await _rows(conn, query.order_by(*(table.c[name] for name in order)))

    return snapshot


SNAPSHOTS: Final[Mapping[str, Snapshot]] = {
    "registration": _registration,
    "plan": _plan,
    "consent": _consent,
    "nodes": _nodes,
    "webhooks": _webhooks,
    "alert_history": _monitored(alert_history, "node_id", "ts"),
    "delivery_attempts": _monitored(delivery_attempts, "at", "id"),
}
"""Hold category -> how to snapshot it (the categories are ``categories.CATEGORIES``)."""
