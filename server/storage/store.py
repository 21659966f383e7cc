"""The one storage interface over an AsyncEngine: the same Core code for SQLite and PostgreSQL.

    store = await Store.open("sqlite+aiosqlite:///data/oneconnect.db")   # migrated beforehand
    account, key = await store.create_account(name=..., email=..., ..., api_key=new_api_key())
    ref = await store.node_by_token(token)          # the agent stream's authentication

Secrets (API keys, node tokens, session ids) are passed in plain and hashed here
(:func:`server.security.secret_digest`) on the way in and on lookup; only digests and display
prefixes are stored. Limits are checked inside the writing transaction with the account row
locked (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so concurrent requests
cannot overshoot a plan. Errors are the server's own (:mod:`server.errors`): Conflict,
Forbidden, NotFound, and Unavailable when the database cannot be reached.

Public API (besides the account/key/session/node CRUD below), relied on by ingest and
node-down detection:

``node_by_token(token) -> NodeRef | None``
    The node a node token belongs to; None for unknown, rotated or malformed tokens.
``mark_enrolled(node_id, now) -> None``
    Set ``enrolled_at`` on the node's first successful connection (later calls keep the first).
``enrolled_nodes() -> list[NodeRef]``
    Every node that has ever connected (node-down detection after a restart expects these).
``account_node_ids(account_id) -> list[str]`` / ``node_ref(account_id, node_id)``
    An account's node ids; one node, or None when it is missing or another account's.

:class:`NodeRef` carries ``min_interval`` from the account's plan (:mod:`server.plans`).
Every operation runs to completion even if its caller is cancelled (``base.shielded``).
The plumbing is in ``base.py``, API keys and sessions in ``credentials.py``, webhook endpoints
in ``webhooks.py``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exc as sa_exc, insert, select, update

from server.errors import Conflict, Forbidden
from server.plans import get_plan
from server.security import display_prefix, new_id, secret_digest
from server.storage.base import shielded
from server.storage.credentials import MAX_API_KEYS, MAX_SESSIONS, CredentialStore
from server.storage.monitoring import MonitoringStore
from server.storage.records import (
    ACCOUNT_COLS,
    KEEP,
    NODE_COLS,
    REF_COLS,
    Account,
    ApiKey,
    Keep,
    Node,
    NodeRef,
    account_of,
    node_of,
    normalise_email,
    ref_of,
)
from server.storage.rights import RightsStore
from server.storage.schema import accounts, nodes
from server.storage.webhooks import Filters, WebhookEndpoint, WebhookStore

__all__ = [
    "KEEP",
    "MAX_API_KEYS",
    "MAX_SESSIONS",
    "Account",
    "ApiKey",
    "Filters",
    "Keep",
    "Node",
    "NodeRef",
    "Store",
    "WebhookEndpoint",
]


class Store(CredentialStore, WebhookStore, MonitoringStore, RightsStore):
    """The storage interface (see the module docstring); ``await Store.open(url)``."""

    # -- accounts ---------------------------------------------------------------------------
    @shielded
    async def create_account(
        self,
        *,
        name: str,
        email: str,
        company: str | None,
        password_hash: str,
        plan: str,
        api_key: str,
        key_name: str,
        now: float,
    ) -> tuple[Account, ApiKey]:
        """A new account with its first API key. Conflict if the e-mail is taken (in any case)."""
        account = Account(new_id(), name, normalise_email(email), company, plan, now)
        key = ApiKey(new_id(), account.id, key_name, display_prefix(api_key), now)
        try:
            async with self._tx(write=True) as conn:
                await conn.execute(
                    insert(accounts).values(
                        id=account.id,
                        name=name,
                        email=account.email,
                        company=company,
                        password_hash=password_hash,
                        plan=plan,
                        created_at=now,
                    )
                )
                await self._insert_key(conn, key, api_key)
        except sa_exc.IntegrityError:
            raise Conflict("an account with this e-mail address already exists") from None
        return account, key

    @shielded
    async def account(self, account_id: str) -> Account | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(select(*ACCOUNT_COLS).where(accounts.c.id == account_id))
            ).first()
        return account_of(row) if row else None

    @shielded
    async def login_record(self, email: str) -> tuple[Account, str] | None:
        """The account and its password hash for a login, found by e-mail (any case)."""
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(*ACCOUNT_COLS, accounts.c.password_hash).where(
                        accounts.c.email == normalise_email(email)
                    )
                )
            ).first()
        return (account_of(row), row.password_hash) if row else None

    @shielded
    async def update_account(
        self,
        account_id: str,
        *,
        name: str | None = None,
        company: str | Keep | None = KEEP,
        plan: str | None = None,
    ) -> Account:
        """Change name, company (None clears it) and/or plan. A plan whose ``max_nodes`` or
        ``max_webhooks`` the account already exceeds is refused with Conflict."""
        async with self._tx(write=True) as conn:
            await self._lock_account(conn, account_id)
            values: dict[str, Any] = {}
            if name is not None:
                values["name"] = name
            if company is not KEEP:
                values["company"] = company
            if plan is not None:
                new = get_plan(plan)
                count = await self._count_nodes(conn, account_id)
                if count > new.max_nodes:
                    raise Conflict(
                        f"the {new.name} plan allows {new.max_nodes} nodes and this account "
                        f"has {count}; delete {count - new.max_nodes} first"
                    )
                hooks = await self._count_webhooks(conn, account_id)
                if hooks > new.max_webhooks:
                    raise Conflict(
                        f"the {new.name} plan allows {new.max_webhooks} webhook endpoints and "
                        f"this account has {hooks}; delete {hooks - new.max_webhooks} first"
                    )
                values["plan"] = new.name
            if values:
                await conn.execute(
                    update(accounts).where(accounts.c.id == account_id).values(**values)
                )
            row = (
                await conn.execute(select(*ACCOUNT_COLS).where(accounts.c.id == account_id))
            ).one()
        return account_of(row)

    # -- nodes ------------------------------------------------------------------------------
    @shielded
    async def create_node(self, account_id: str, *, name: str, token: str, now: float) -> Node:
        """A new node with ``token`` (digest stored). Forbidden past the plan's max_nodes."""
        node = Node(new_id(), account_id, name, display_prefix(token), now, None)
        async with self._tx(write=True) as conn:
            plan = await self._lock_account(conn, account_id)
            if await self._count_nodes(conn, account_id) >= plan.max_nodes:
                raise Forbidden(
                    f"the {plan.name} plan allows at most {plan.max_nodes} nodes; "
                    "delete a node or change to a larger plan"
                )
            await conn.execute(
                insert(nodes).values(
                    id=node.id,
                    account_id=account_id,
                    name=name,
                    token_prefix=node.token_prefix,
                    token_hash=secret_digest(token),
                    created_at=now,
                    enrolled_at=None,
                )
            )
        return node

    @shielded
    async def nodes(self, account_id: str) -> list[Node]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(*NODE_COLS)
                .where(nodes.c.account_id == account_id)
                .order_by(nodes.c.created_at, nodes.c.id)
            )
            return [node_of(row) for row in rows]

    @shielded
    async def node(self, account_id: str, node_id: str) -> Node | None:
        """One node of this account; None if missing or another account's."""
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(*NODE_COLS).where(
                        nodes.c.id == node_id, nodes.c.account_id == account_id
                    )
                )
            ).first()
        return node_of(row) if row else None

    async def _update_node(self, account_id: str, node_id: str, **values: Any) -> Node | None:
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                update(nodes)
                .where(nodes.c.id == node_id, nodes.c.account_id == account_id)
                .values(**values)
            )
            if result.rowcount == 0:
                return None
            row = (await conn.execute(select(*NODE_COLS).where(nodes.c.id == node_id))).one()
        return node_of(row)

    @shielded
    async def rename_node(self, account_id: str, node_id: str, name: str) -> Node | None:
        return await self._update_node(account_id, node_id, name=name)

    @shielded
    async def rotate_node_token(self, account_id: str, node_id: str, token: str) -> Node | None:
        """Replace the node's token: the old one stops authenticating at once."""
        return await self._update_node(
            account_id,
            node_id,
            token_hash=secret_digest(token),
            token_prefix=display_prefix(token),
        )

    @shielded
    async def delete_node(self, account_id: str, node_id: str) -> bool:
        async with self._tx(write=True) as conn:
            result = await conn.execute(
                delete(nodes).where(nodes.c.id == node_id, nodes.c.account_id == account_id)
            )
        return result.rowcount > 0

    # -- what ingest and node-down detection use ---------------------------------------------
    @shielded
    async def node_by_token(self, token: str) -> NodeRef | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(*REF_COLS)
                    .join(accounts, accounts.c.id == nodes.c.account_id)
                    .where(nodes.c.token_hash == secret_digest(token))
                )
            ).first()
        return ref_of(row) if row else None

    @shielded
    async def mark_enrolled(self, node_id: str, now: float) -> None:
        async with self._tx(write=True) as conn:
            await conn.execute(
                update(nodes)
                .where(nodes.c.id == node_id, nodes.c.enrolled_at.is_(None))
                .values(enrolled_at=now)
            )

    @shielded
    async def enrolled_nodes(self) -> list[NodeRef]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(*REF_COLS)
                .join(accounts, accounts.c.id == nodes.c.account_id)
                .where(nodes.c.enrolled_at.is_not(None))
                .order_by(nodes.c.id)
            )
            return [ref_of(row) for row in rows]

    @shielded
    async def account_node_ids(self, account_id: str) -> list[str]:
        async with self._tx() as conn:
            rows = await conn.execute(
                select(nodes.c.id)
                .where(nodes.c.account_id == account_id)
                .order_by(nodes.c.created_at, nodes.c.id)
            )
            return [row.id for row in rows]

    @shielded
    async def node_ref(self, account_id: str, node_id: str) -> NodeRef | None:
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(*REF_COLS)
                    .join(accounts, accounts.c.id == nodes.c.account_id)
                    .where(nodes.c.id == node_id, nodes.c.account_id == account_id)
                )
            ).first()
        return ref_of(row) if row else None
