"""Webhook endpoints in storage: where an account's alerts are delivered.

Unlike every other secret, an endpoint's signing secret is stored as it is — the server signs
each delivery with it (HMAC needs the key). The API shows it once, at creation and rotation;
reads never return it. A :class:`WebhookEndpoint` record therefore carries secrets and must
not be serialised as a whole: ``server.api.webhooks.endpoint_json`` picks the public fields.

The number of endpoints is bounded by the plan's ``max_webhooks``, checked with the account
row locked like ``max_nodes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from agent.protocol import AlertEvent
from server.errors import Forbidden
from server.security import new_id
from server.storage.base import StoreBase, shielded
from server.storage.records import AnyRow
from server.storage.schema import webhook_endpoints

FILTER_KEYS: Final = ("severities", "nodes", "rules")


@dataclass(frozen=True, slots=True)
class Filters:
    """Which alerts an endpoint receives; an empty tuple matches everything."""

    severities: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()

    def matches(self, node_id: str, event: AlertEvent) -> bool:
        return (
            (not self.severities or event.severity in self.severities)
            and (not self.nodes or node_id in self.nodes)
            and (not self.rules or event.rule in self.rules)
        )

    def as_json(self) -> dict[str, list[str]]:
        return {
            "severities": list(self.severities),
            "nodes": list(self.nodes),
            "rules": list(self.rules),
        }

    @classmethod
    def of(cls, data: Any) -> Filters:
        data = data if isinstance(data, dict) else {}
        return cls(*(tuple(str(v) for v in data.get(key) or ()) for key in FILTER_KEYS))


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    id: str
    account_id: str
    name: str
    url: str = field(repr=False)  # Slack/Discord/Teams URLs carry tokens: never in a repr
    format: str
    enabled: bool
    disabled_reason: str | None
    filters: Filters
    routing_key: str | None = field(repr=False)
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False)
    previous_secret_until: float | None
    created_at: float
    updated_at: float

    def signing_secrets(self, now: float) -> tuple[str, ...]:
        """The secrets that sign a delivery at ``now``: the current one, plus the previous one
        during its rotation grace window."""
        until = self.previous_secret_until
        if self.previous_secret and until is not None and now < until:
            return (self.secret, self.previous_secret)
        return (self.secret,)


_COLS = (
    webhook_endpoints.c.id,
    webhook_endpoints.c.account_id,
    webhook_endpoints.c.name,
    webhook_endpoints.c.url,
    webhook_endpoints.c.format,
    webhook_endpoints.c.enabled,
    webhook_endpoints.c.disabled_reason,
    webhook_endpoints.c.filters,
    webhook_endpoints.c.routing_key,
    webhook_endpoints.c.secret,
    webhook_endpoints.c.previous_secret,
    webhook_endpoints.c.previous_secret_until,
    webhook_endpoints.c.created_at,
    webhook_endpoints.c.updated_at,
)


def _endpoint_of(row: AnyRow) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        url=row.url,
        format=row.format,
        enabled=bool(row.enabled),
        disabled_reason=row.disabled_reason,
        filters=Filters.of(row.filters),
        routing_key=row.routing_key,
        secret=row.secret,
        previous_secret=row.previous_secret,
        previous_secret_until=row.previous_secret_until,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class WebhookStore(StoreBase):
    async def _count_webhooks(self, conn: AsyncConnection, account_id: str) -> int:
        count = await conn.scalar(
            select(func.count())
            .select_from(webhook_endpoints)
            .where(webhook_endpoints.c.account_id == account_id)
        )
        return int(count or 0)

    @shielded
    async def create_webhook(
        self,
        account_id: str,
        *,
        name: str,
        url: str,
        format: str,
        enabled: bool,
        filters: Filters,
        routing_key: str | None,
        secret: str,
        now: float,
    ) -> WebhookEndpoint:
        """A new endpoint. Forbidden past the plan's ``max_webhooks``."""
        endpoint = WebhookEndpoint(
            new_id(), account_id, name, url, format, enabled, None, filters, routing_key,
            secret, None, None, now, now,
        )  # fmt: skip
        async with self._tx(write=True) as conn:
            plan = await self._lock_account(conn, account_id)
            if await self._count_webhooks(conn, account_id) >= plan.max_webhooks:
                raise Forbidden(
                    f"the {plan.name} plan allows at most {plan.max_webhooks} webhook "
                    "endpoints; delete one or change to a larger plan"
                )
            await conn.execute(
                insert(webhook_endpoints).values(
                    id=endpoint.id,
                    account_id=account_id,
                    name=name,
                    url=url,
                    format=format,
                    enabled=enabled,
                    disabled_reason=None,
                    filters=filters.as_json(),
                    routing_key=routing_key,
                    secret=secret,
                    previous_secret=None,
                    previous_secret_until=None,
                    created_at=now,
                    updated_at=now,
                )
            )
        return endpoint

    @shielded
    async def webhooks(self, account_id: str) -> list[WebhookEndpoint]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(*_COLS)
                .where(webhook_endpoints.c.account_id == account_id)
                .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
            )
            return [_endpoint_of(row) for row in rows]

    @shielded
    async def webhook(self, account_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        """One endpoint of this account; None if missing or another account's."""
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(*_COLS).where(
                        webhook_endpoints.c.id == endpoint_id,
                        webhook_endpoints.c.account_id == account_id,
                    )
                )
            ).first()
        return _endpoint_of(row) if row else None

    @shielded
    async def update_webhook(
        self, /, account_id: str, endpoint_id: str, *, now: float, **values: Any
    ) -> WebhookEndpoint | None:
        """Change columns of one endpoint (``filters`` as :class:`Filters`); None if missing."""
        if isinstance(values.get("filters"), Filters):
            values["filters"] = values["filters"].as_json()
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(webhook_endpoints)
                .where(
                    webhook_endpoints.c.id == endpoint_id,
                    webhook_endpoints.c.account_id == account_id,
                )
                .values(updated_at=now, **values)
            )
            if result.rowcount == 0:
                return None
            row = (
                await conn.execute(select(*_COLS).where(webhook_endpoints.c.id == endpoint_id))
            ).one()
        return _endpoint_of(row)

    @shielded
    async def rotate_webhook_secret(
        self, account_id: str, endpoint_id: str, *, secret: str, grace_until: float, now: float
    ) -> WebhookEndpoint | None:
        """Make ``secret`` current; the old one keeps signing until ``grace_until``."""
        current = await self.webhook(account_id, endpoint_id)
        if current is None:
            return None
        keep_old = grace_until > now
        return await self.update_webhook(
            account_id,
            endpoint_id,
            now=now,
            secret=secret,
            previous_secret=current.secret if keep_old else None,
            previous_secret_until=grace_until if keep_old else None,
        )

    @shielded
    async def delete_webhook(self, account_id: str, endpoint_id: str) -> bool:
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                delete(webhook_endpoints).where(
                    webhook_endpoints.c.id == endpoint_id,
                    webhook_endpoints.c.account_id == account_id,
                )
            )
        return result.rowcount > 0

    @shielded
    async def disable_webhook(self, endpoint_id: str, *, reason: str, now: float) -> None:
        """Turn an endpoint off from the delivery engine (410, failing for too long)."""
        async with self._tx(write=True) as conn:
            await conn.execute(
                update(webhook_endpoints)
                .where(webhook_endpoints.c.id == endpoint_id)
                .values(enabled=False, disabled_reason=reason[:200], updated_at=now)
            )

    @shielded
    async def webhooks_of(self, account_ids: Sequence[str]) -> list[WebhookEndpoint]:
        """Every endpoint of these accounts (dispatch's cache fill)."""
        if not account_ids:
            return []
        async with self._tx() as conn:
            rows = await conn.execute(
                select(*_COLS)
                .where(webhook_endpoints.c.account_id.in_(list(account_ids)))
                .order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
            )
            return [_endpoint_of(row) for row in rows]
