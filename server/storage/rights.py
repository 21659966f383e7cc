"""The developer's data rights in storage: the saved-monitoring consent and export; deletion
and legal holds are in ``deletion.py`` (what each table and category holds: ``datamap.py``).

``consent(account_id) -> Consent | None`` and ``consents() -> {account_id: nodes | None}``
(every consent, for the server's in-memory cache). ``set_consent`` records it (Forbidden when
the plan has no retention, Unprocessable for nodes not of the account); narrowing the nodes
deletes the rows of the nodes no longer chosen. ``clear_consent`` deletes the consent and
every monitored row of the account — unless ``keep_data``: then the rows stay until their
retention ends. Both lock the account row, then the consent row (``FOR UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises all writers) before deleting. **A writer
of monitored rows must read the consent row ``FOR SHARE`` in its writing transaction**: then
an opt-out either waits for it and deletes its rows, or the writer waits for the opt-out and
finds no consent — no row survives an opt-out.

``export(account_id)`` yields every export section's rows (``datamap.EXPORT``), the monitored
tables in pages of ``EXPORT_PAGE`` rows read by key, each page in its own short transaction
(so a big export holds no transaction open; rows written meanwhile may or may not appear).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.errors import Forbidden, Unprocessable
from server.storage.base import shielded
from server.storage.datamap import EXPORT, Section, owned
from server.storage.deletion import DeletionStore
from server.storage.records import AnyRow
from server.storage.schema import MONITORED_TABLES, nodes, saved_monitoring

Page = tuple[Section, list[dict[str, Any]]]
"""One export section and some of its rows."""

EXPORT_PAGE: Final = 1000
"""Rows per read of a monitored table during an export (each page its own transaction)."""


@dataclass(frozen=True, slots=True)
class Consent:
    account_id: str
    nodes: tuple[str, ...] | None
    """The chosen node ids, or None for every node of the account."""
    consented_at: float
    consented_by: str
    """``api_key:<key id>`` or ``session:<first 16 characters of the session digest>``."""
    updated_at: float


def _consent_of(row: AnyRow) -> Consent:
    chosen = None if row.nodes is None else tuple(str(n) for n in row.nodes)
    return Consent(row.account_id, chosen, row.consented_at, row.consented_by, row.updated_at)


class RightsStore(DeletionStore):
    # -- consent ----------------------------------------------------------------------------
    async def _locked_consent(self, conn: AsyncConnection, account_id: str) -> Consent | None:
        row = (
            await conn.execute(
                select(saved_monitoring)
                .where(saved_monitoring.c.account_id == account_id)
                .with_for_update()
            )
        ).first()
        return _consent_of(row) if row else None

    async def _node_ids(self, conn: AsyncConnection, account_id: str) -> list[str]:
        rows = await conn.execute(
            select(nodes.c.id)
            .where(nodes.c.account_id == account_id)
            .order_by(nodes.c.created_at, nodes.c.id)
        )
        return [row.id for row in rows]

    @shielded
    async def consent(self, account_id: str) -> Consent | None:
        """The account's consent; its node list shows only nodes that still exist."""
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    select(saved_monitoring).where(saved_monitoring.c.account_id == account_id)
                )
            ).first()
            if row is None:
                return None
            consent = _consent_of(row)
            if consent.nodes is None:
                return consent
            existing = set(await self._node_ids(conn, account_id))
        chosen = tuple(n for n in consent.nodes if n in existing)
        return Consent(
            account_id, chosen, consent.consented_at, consent.consented_by, consent.updated_at
        )

    @shielded
    async def consents(self) -> dict[str, frozenset[str] | None]:
        """Every consent: account id -> the chosen node ids, or None for all nodes."""
        async with self._tx() as conn:
            rows = await conn.execute(
                select(saved_monitoring.c.account_id, saved_monitoring.c.nodes)
            )
            return {
                row.account_id: None if row.nodes is None else frozenset(map(str, row.nodes))
                for row in rows
            }

    @shielded
    async def set_consent(
        self,
        account_id: str,
        *,
        nodes: Sequence[str] | None,
        by: str,
        now: float,
        keep_data: bool = False,
    ) -> Consent:
        """Turn saved monitoring on (or change its nodes; ``nodes`` None = every node).
        Forbidden if the plan keeps nothing; Unprocessable for ids that are not the
        account's nodes. Changing the nodes of a consent leaves saved rows only of the chosen
        nodes (also rows kept by an earlier change) unless ``keep_data``; a first opt-in
        deletes nothing. The same choice again changes nothing; a change records ``now`` and
        ``by`` anew."""
        chosen = None if nodes is None else tuple(dict.fromkeys(nodes))
        async with self._tx(write=True) as conn:
            plan = await self._lock_account(conn, account_id)
            if not plan.includes_saved_monitoring:
                raise Forbidden(
                    f"saved monitoring is not included in the {plan.name} plan; "
                    "change to a plan with retention first"
                )
            current = await self._locked_consent(conn, account_id)
            owned_ids = await self._node_ids(conn, account_id)
            if chosen is not None:
                unknown = len(set(chosen) - set(owned_ids))
                if unknown:
                    raise Unprocessable(
                        f"saved_nodes: {unknown} of the ids are not nodes of this account",
                        field="saved_nodes",
                    )
            if current is not None:
                same = (current.nodes is None and chosen is None) or (
                    current.nodes is not None
                    and chosen is not None
                    and set(current.nodes) == set(chosen)
                )
                if same:
                    return current
                if not keep_data and chosen is not None:
                    await self._delete_node_rows(conn, sorted(set(owned_ids) - set(chosen)))
            values = {
                "consented_at": now,
                "consented_by": by,
                "nodes": None if chosen is None else list(chosen),
                "updated_at": now,
            }
            if current is None:
                await conn.execute(insert(saved_monitoring).values(account_id=account_id, **values))
            else:
                await conn.execute(
                    update(saved_monitoring)
                    .where(saved_monitoring.c.account_id == account_id)
                    .values(**values)
                )
        return Consent(account_id, chosen, now, by, now)

    async def _delete_node_rows(self, conn: AsyncConnection, node_ids: Sequence[str]) -> None:
        """The monitored rows of these nodes (delivery attempts are the endpoint's: kept)."""
        if not node_ids:
            return
        for table in MONITORED_TABLES:
            if "node_id" in table.c:
                await conn.execute(delete(table).where(table.c.node_id.in_(list(node_ids))))

    async def _delete_monitored(self, conn: AsyncConnection, account_id: str) -> None:
        for table in MONITORED_TABLES:
            await conn.execute(delete(table).where(owned(table, account_id)))

    @shielded
    async def clear_consent(self, account_id: str, *, keep_data: bool) -> bool:
        """Turn saved monitoring off; unless ``keep_data``, every monitored row of the
        account goes in the same transaction (also rows kept by an earlier opt-out). True if
        there was a consent."""
        async with self._tx(write=True) as conn:
            await self._lock_account(conn, account_id)
            current = await self._locked_consent(conn, account_id)
            if not keep_data:
                await self._delete_monitored(conn, account_id)
            await conn.execute(
                delete(saved_monitoring).where(saved_monitoring.c.account_id == account_id)
            )
        return current is not None

    # -- export -----------------------------------------------------------------------------
    @shielded
    async def export_page(
        self, account_id: str, section: Section, after: tuple[Any, ...] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of one export section: all of them, or for a paged section the next
        EXPORT_PAGE rows after the key ``after``."""
        query = (
            select(*section.columns)
            .where(owned(section.table, account_id))
            .order_by(*section.key_columns)
        )
        if section.paged:
            if after is not None:
                query = query.where(tuple_(*section.key_columns) > tuple_(*after))
            query = query.limit(EXPORT_PAGE)
        async with self._tx() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def export(
        self, account_id: str
    ) -> AsyncGenerator[tuple[Section, list[dict[str, Any]]], None]:
        """Every export section's rows of the account, page by page (a section with no rows
        yields one empty page)."""
        for section in EXPORT:
            after: tuple[Any, ...] | None = None
            while True:
                rows = await self.export_page(account_id, section, after)
                yield section, rows
                if not section.paged or len(rows) < EXPORT_PAGE:
                    break
                after = tuple(rows[-1][name] for name in section.key)
