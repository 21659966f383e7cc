"""Engine construction for both databases: the only dialect-specific code of the storage layer.

SQLite (``sqlite+aiosqlite:///path``): every connection gets ``journal_mode=WAL``,
``foreign_keys=ON`` (off for migrations: SQLite batch migrations recreate tables, and cascades
must not fire then), ``busy_timeout`` and ``synchronous=NORMAL`` (safe with WAL). The driver's own
implicit transactions are switched off and SQLAlchemy emits ``BEGIN`` itself — ``BEGIN
IMMEDIATE`` for connections marked with :data:`WRITE` — so a read-then-write transaction holds
the write lock from its start (no lost updates, no "database is locked" on lock upgrade) and DDL
is transactional.

PostgreSQL (``postgresql+asyncpg://``): a connect timeout, a statement timeout and pre-ping, so
a restarted database does not leave dead pooled connections. Row locks (``SELECT … FOR
UPDATE``) come from portable Core (``with_for_update()``, a no-op on SQLite, where ``BEGIN
IMMEDIATE`` already serialises writers).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

WRITE: Final = "oneconnect_write"
"""Execution option: this connection's transaction will write (SQLite: ``BEGIN IMMEDIATE``)."""
BUSY_TIMEOUT_MS: Final = 10_000
CONNECT_TIMEOUT_S: Final = 10.0


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, foreign_keys: bool = True) -> AsyncEngine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_async_engine(parsed)
        _sqlite_events(engine, foreign_keys=foreign_keys)
        return engine
    if backend == "postgresql":
        return create_async_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={"timeout": CONNECT_TIMEOUT_S, "command_timeout": 60.0},
        )
    raise ValueError(f"unsupported database backend {backend!r} (sqlite or postgresql)")


def _sqlite_events(engine: AsyncEngine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (below)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
