"""Deletion on request, and the legal holds that may keep part of a deleted account's data.

``delete_account(account_id, status_token=..., now=...)`` snapshots, for each active legal
hold, its categories (``categories.CATEGORIES``) into ``held_data``, records a
``deletion_requests`` row (id, account id, status-token digest, times, state), and deletes the
account row: keys, sessions, nodes, endpoints, consent and monitored rows go by cascade, and so
do the account's ended or released holds. Deleted means deleted: no soft-delete flag anywhere.
The consent row is locked first, so a concurrent writer of monitored rows finishes before the
cascade (see ``rights.py``). ``deletion(status_token, now)`` reads the request back, ending
expired holds first.

Holds are managed by the operator only (``server/holds.py``): ``add_hold``, ``holds``,
``release_hold``, and ``expire_holds(now)`` for the periodic job. A hold is active while not
released and its ``ends_at`` is unset or in the future. When a hold of a deleted account ends,
its held data goes; when the last one ends, the account's hold records go too and the request
becomes ``completed`` — then nothing of the account is left but the request's own row. A hold
added after deletion (by account id) copies what another active hold still keeps; nothing
else can be recovered. A live account's ended holds stay listed until the account is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.errors import Conflict, NotFound, Unprocessable
from server.security import new_id, secret_digest
from server.storage.base import StoreBase, shielded
from server.storage.categories import CATEGORIES, HOLD_KINDS
from server.storage.datamap import SNAPSHOTS
from server.storage.records import AnyRow, normalise_email
from server.storage.schema import (
    accounts,
    deletion_requests,
    held_data,
    legal_holds,
    saved_monitoring,
)

MAX_REASON_CHARS: Final = 500

HoldState = Literal["active", "released", "ended"]
DeletionState = Literal["held", "completed"]


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    account_id: str
    kind: str
    reason: str
    categories: tuple[str, ...]
    created_at: float
    ends_at: float | None
    released_at: float | None
    account_deleted: bool = False
    held: tuple[str, ...] = ()
    """The categories this hold keeps a copy of (only once the account is deleted)."""

    def state(self, now: float) -> HoldState:
        if self.released_at is not None:
            return "released"
        if self.ends_at is not None and self.ends_at <= now:
            return "ended"
        return "active"


@dataclass(frozen=True, slots=True)
class Deletion:
    id: str
    account_id: str
    state: DeletionState
    requested_at: float
    completed_at: float | None
    holds: tuple[Hold, ...]
    """The active holds still keeping data."""


def _hold_of(row: AnyRow, *, deleted: bool = False, held: Iterable[str] = ()) -> Hold:
    return Hold(
        row.id, row.account_id, row.kind, row.reason, tuple(row.categories), row.created_at,
        row.ends_at, row.released_at, deleted, tuple(held),
    )  # fmt: skip


def _active(now: float) -> ColumnElement[bool]:
    return and_(
        legal_holds.c.released_at.is_(None),
        or_(legal_holds.c.ends_at.is_(None), legal_holds.c.ends_at > now),
    )


def check_hold(kind: str, reason: str, categories: Sequence[str], ends_at: float | None,
               now: float) -> tuple[str, ...]:  # fmt: skip
    """The categories (deduplicated, in order), or Unprocessable naming what is wrong."""
    if kind not in HOLD_KINDS:
        raise Unprocessable(f"kind: one of {', '.join(HOLD_KINDS)}", field="kind")
    if not reason.strip() or len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        raise Unprocessable(f"reason: 1-{MAX_REASON_CHARS} printable characters", field="reason")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown or not categories:
        raise Unprocessable(
            f"categories: one or more of {', '.join(CATEGORIES)}", field="categories"
        )
    if ends_at is not None and ends_at <= now:
        raise Unprocessable("until: the end must be in the future", field="until")
    return tuple(dict.fromkeys(categories))


class DeletionStore(StoreBase):
    # -- deletion ---------------------------------------------------------------------------
    @shielded
    async def delete_account(self, account_id: str, *, status_token: str, now: float) -> Deletion:
        """Delete the account and everything of it but what its active holds keep."""
        async with self._tx(write=True) as conn:
            await self._lock_account(conn, account_id)
            await conn.execute(  # writers of monitored rows finish first (rights.py)
                select(saved_monitoring.c.account_id)
                .where(saved_monitoring.c.account_id == account_id)
                .with_for_update()
            )
            rows = (
                await conn.execute(
                    select(legal_holds)
                    .where(legal_holds.c.account_id == account_id, _active(now))
                    .order_by(legal_holds.c.created_at, legal_holds.c.id)
                    .with_for_update()
                )
            ).all()
            holds = [_hold_of(row, deleted=True, held=row.categories) for row in rows]
            snapshots: dict[str, Any] = {}
            for hold in holds:
                for category in hold.categories:
                    if category not in snapshots:
                        snapshots[category] = await SNAPSHOTS[category](conn, account_id)
                    await self._insert_held(conn, hold.id, category, snapshots[category], now)
            await conn.execute(
                delete(legal_holds).where(
                    legal_holds.c.account_id == account_id,
                    legal_holds.c.id.not_in([h.id for h in holds]),
                )
            )
            state: DeletionState = "held" if holds else "completed"
            deletion = Deletion(
                new_id(), account_id, state, now, None if holds else now, tuple(holds)
            )
            await conn.execute(
                insert(deletion_requests).values(
                    id=deletion.id,
                    account_id=account_id,
                    status_hash=secret_digest(status_token),
                    requested_at=now,
                    completed_at=deletion.completed_at,
                    state=state,
                )
            )
            await conn.execute(delete(accounts).where(accounts.c.id == account_id))
        return deletion

    async def _insert_held(
        self, conn: AsyncConnection, hold_id: str, category: str, data: Any, now: float
    ) -> None:
        await conn.execute(
            insert(held_data).values(
                id=new_id(), hold_id=hold_id, category=category, data=data, created_at=now
            )
        )

    @shielded
    async def deletion(self, status_token: str, now: float) -> Deletion | None:
        """The deletion request a status token belongs to (expired holds ended first)."""
        query = select(deletion_requests).where(
            deletion_requests.c.status_hash == secret_digest(status_token)
        )
        async with self._tx() as conn:  # most reads need no write lock
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        async with self._tx(write=row.state == "held") as conn:
            if row.state == "held":
                await self._settle(conn, row.account_id, now)
                row = (await conn.execute(query)).one()
            holds = await self._holds_of(conn, [row.account_id], now=now, active_only=True)
        return Deletion(
            row.id, row.account_id, row.state, row.requested_at, row.completed_at, tuple(holds)
        )

    async def _settle(self, conn: AsyncConnection, account_id: str, now: float) -> bool:
        """For a deleted account in state ``held``: drop the data of holds that ended; after
        the last, drop the hold records and complete the request. True if it completed."""
        request = await conn.scalar(
            select(deletion_requests.c.id)
            .where(
                deletion_requests.c.account_id == account_id, deletion_requests.c.state == "held"
            )
            .with_for_update()
        )
        if request is None:
            return False
        ended = select(legal_holds.c.id).where(
            legal_holds.c.account_id == account_id, ~_active(now)
        )
        await conn.execute(delete(held_data).where(held_data.c.hold_id.in_(ended)))
        remaining = await conn.scalar(
            select(func.count())
            .select_from(legal_holds)
            .where(legal_holds.c.account_id == account_id, _active(now))
        )
        if remaining:
            return False
        mine = select(legal_holds.c.id).where(legal_holds.c.account_id == account_id)
        await conn.execute(delete(held_data).where(held_data.c.hold_id.in_(mine)))
        await conn.execute(delete(legal_holds).where(legal_holds.c.account_id == account_id))
        await conn.execute(
            update(deletion_requests)
            .where(deletion_requests.c.id == request)
            .values(state="completed", completed_at=now)
        )
        return True

    # -- holds (operator) -------------------------------------------------------------------
    async def _resolve(self, conn: AsyncConnection, account: str) -> tuple[str, bool]:
        """(account id, deleted?) for an id or e-mail address; NotFound otherwise."""
        if "@" in account:
            found = await conn.scalar(
                select(accounts.c.id)
                .where(accounts.c.email == normalise_email(account))
                .with_for_update()
            )
            if found is None:
                raise NotFound(
                    "no account with this e-mail address (a deleted account is found by its "
                    "id only)"
                )
            return found, False
        found = await conn.scalar(
            select(accounts.c.id).where(accounts.c.id == account).with_for_update()
        )
        if found is not None:
            return found, False
        deleted = await conn.scalar(
            select(deletion_requests.c.id)
            .where(deletion_requests.c.account_id == account)
            .with_for_update()
        )
        if deleted is None:
            raise NotFound("no account with this id")
        return account, True

    async def _holds_of(
        self, conn: AsyncConnection, account_ids: Sequence[str] | None, *, now: float,
        active_only: bool,
    ) -> list[Hold]:  # fmt: skip
        query = select(legal_holds).order_by(legal_holds.c.created_at, legal_holds.c.id)
        if account_ids is not None:
            query = query.where(legal_holds.c.account_id.in_(list(account_ids)))
        if active_only:
            query = query.where(_active(now))
        rows = (await conn.execute(query)).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        held: dict[str, set[str]] = {}
        for hold_id, category in await conn.execute(
            select(held_data.c.hold_id, held_data.c.category).where(held_data.c.hold_id.in_(ids))
        ):
            held.setdefault(hold_id, set()).add(category)
        deleted = {
            row.account_id
            for row in await conn.execute(
                select(deletion_requests.c.account_id).where(
                    deletion_requests.c.account_id.in_({row.account_id for row in rows})
                )
            )
        }
        return [
            _hold_of(
                row,
                deleted=row.account_id in deleted,
                held=[c for c in row.categories if c in held.get(row.id, ())],
            )
            for row in rows
        ]

    @shielded
    async def add_hold(
        self,
        account: str,
        *,
        kind: str,
        reason: str,
        categories: Sequence[str],
        ends_at: float | None,
        now: float,
    ) -> Hold:
        """A new hold on an account (by id or e-mail address). On a deleted account (by id
        only) it keeps copies of what other active holds still keep of these categories —
        Conflict if that is nothing; its ``categories`` are then the ones it could keep."""
        chosen = check_hold(kind, reason, categories, ends_at, now)
        async with self._tx(write=True) as conn:
            account_id, deleted = await self._resolve(conn, account)
            copies: dict[str, Any] = {}
            if deleted:
                await self._settle(conn, account_id, now)
                active = select(legal_holds.c.id).where(
                    legal_holds.c.account_id == account_id, _active(now)
                )
                for category, data in await conn.execute(
                    select(held_data.c.category, held_data.c.data)
                    .where(held_data.c.hold_id.in_(active), held_data.c.category.in_(chosen))
                    .order_by(held_data.c.created_at)
                ):
                    copies.setdefault(category, data)
                if not copies:
                    raise Conflict(
                        "this account is deleted and nothing of these categories is held any "
                        "more; nothing can be recovered"
                    )
                chosen = tuple(c for c in chosen if c in copies)
            hold_id = new_id()
            await conn.execute(
                insert(legal_holds).values(
                    id=hold_id,
                    account_id=account_id,
                    kind=kind,
                    reason=reason,
                    categories=list(chosen),
                    created_at=now,
                    ends_at=ends_at,
                    released_at=None,
                )
            )
            for category in chosen if deleted else ():
                await self._insert_held(conn, hold_id, category, copies[category], now)
        return Hold(
            hold_id, account_id, kind, reason, chosen, now, ends_at, None, deleted,
            chosen if deleted else (),
        )  # fmt: skip

    @shielded
    async def holds(
        self, account: str | None = None, *, include_inactive: bool = False, now: float
    ) -> list[Hold]:
        """Holds (of one account, by id or e-mail address), active ones unless
        ``include_inactive``."""
        async with self._tx(write=account is not None) as conn:
            ids = None if account is None else [(await self._resolve(conn, account))[0]]
            return await self._holds_of(conn, ids, now=now, active_only=not include_inactive)

    @shielded
    async def release_hold(self, hold_id: str, *, now: float) -> tuple[Hold, str | None]:
        """End an active hold now. Returns it and its account's deletion state afterwards
        (None while the account exists). NotFound / Conflict (not active)."""
        async with self._tx(write=True) as conn:
            row = (
                await conn.execute(
                    select(legal_holds).where(legal_holds.c.id == hold_id).with_for_update()
                )
            ).first()
            if row is None:
                raise NotFound("no hold with this id")
            state = _hold_of(row).state(now)
            if state != "active":
                raise Conflict(f"this hold is not active (it has {state})")
            await conn.execute(
                update(legal_holds).where(legal_holds.c.id == hold_id).values(released_at=now)
            )
            await self._settle(conn, row.account_id, now)
            deletion = await conn.scalar(
                select(deletion_requests.c.state).where(
                    deletion_requests.c.account_id == row.account_id
                )
            )
        return replace(_hold_of(row, deleted=deletion is not None), released_at=now), deletion

    @shielded
    async def expire_holds(self, now: float) -> int:
        """The periodic job: end the holds of deleted accounts whose ``ends_at`` passed (their
        held data goes) and complete requests whose last hold ended. Returns how many
        deletion requests completed."""
        async with self._tx(write=True) as conn:
            held = await conn.execute(
                select(deletion_requests.c.account_id).where(deletion_requests.c.state == "held")
            )
            completed = 0
            for account_id in [row.account_id for row in held]:
                completed += await self._settle(conn, account_id, now)
        return completed
