"""The Store's plumbing: one engine, transactions, cancellation shielding, shared locks.

:class:`StoreBase` is not used on its own: :class:`~server.storage.store.Store` (accounts, nodes)
builds on :class:`~server.storage.credentials.CredentialStore` (API keys, sessions), which
builds on this.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Concatenate, Final, ParamSpec, Self, TypeVar

from sqlalchemy import exc as sa_exc, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from server.errors import NotFound, Unavailable
from server.plans import Plan, get_plan
from server.storage.engine import WRITE, create_engine
from server.storage.schema import accounts, nodes

PING_TIMEOUT_S: Final = 5.0
CLOSE_WAIT_S: Final = 10.0

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="StoreBase")


def shielded(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Run the operation as its own task, shielded from the caller's cancellation: a request
    or background task cancelled mid-query must not leave a connection half-used (the driver
    thread of aiosqlite, an asyncpg protocol state). ``close()`` waits for these tasks."""

    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.ensure_future(method(self, *args, **kwargs))
        self._inflight.add(task)
        task.add_done_callback(_finished(self._inflight))
        return await asyncio.shield(task)

    functools.update_wrapper(run, method)
    return run


def _finished(inflight: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned failure is not logged as "never retrieved"

    return done


class StoreBase:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._inflight: set[asyncio.Task[Any]] = set()

    @classmethod
    async def open(cls, url: str) -> Self:
        """One engine for ``url`` (SQLite: WAL, foreign keys, busy timeout — see engine.py).
        The schema must already be migrated (:func:`server.storage.migrate.migrate`)."""
        return cls(create_engine(url))

    @property
    def engine(self) -> AsyncEngine:
        """For tests and later storage modules (issue 5); handlers use the methods."""
        return self._engine

    async def close(self) -> None:
        """Wait (a bounded time) for operations still running, then close every connection."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=CLOSE_WAIT_S)
        await self._engine.dispose()

    @shielded
    async def ping(self) -> None:
        """Raise Unavailable unless the database answers a trivial query in time."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_S), self._tx() as conn:
                await conn.execute(select(literal(1)))
        except TimeoutError:
            raise Unavailable("storage is not reachable") from None

    @asynccontextmanager
    async def _tx(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction; ``write`` takes SQLite's write lock up front."""
        try:
            async with self._engine.connect() as conn:
                if write:
                    await conn.execution_options(**{WRITE: True})
                async with conn.begin():
                    yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, OSError) as exc:
            raise Unavailable("storage is not reachable") from exc

    async def _lock_account(self, conn: AsyncConnection, account_id: str) -> Plan:
        plan = await conn.scalar(
            select(accounts.c.plan).where(accounts.c.id == account_id).with_for_update()
        )
        if plan is None:
            raise NotFound("no such account")
        return get_plan(plan)

    async def _count_nodes(self, conn: AsyncConnection, account_id: str) -> int:
        count = await conn.scalar(
            select(func.count()).select_from(nodes).where(nodes.c.account_id == account_id)
        )
        return int(count or 0)
