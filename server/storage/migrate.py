"""Apply the Alembic migrations in ``migrations/`` programmatically (``oneconnect-server migrate``,
and ``run`` with ``migrate_on_start``).

    applied = await migrate("sqlite+aiosqlite:///data/oneconnect.db")   # ["0001"] or []

The whole upgrade runs in one transaction (DDL is transactional on both databases, see
``engine.py``); on PostgreSQL a transaction-scoped advisory lock lets several replicas start at
once — one migrates, the others wait and then find nothing pending.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from server.storage.engine import WRITE, create_engine

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY: Final = 0x0C0A1E47
"""pg_advisory_xact_lock key of the migration lock (any constant, fixed forever)."""


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def migrate(url: str) -> list[str]:
    """Apply every pending migration to ``url``; return the revision ids applied, in order
    (empty when the database was already at head)."""
    config = alembic_config(url)
    engine = create_engine(url, foreign_keys=False)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{WRITE: True})
            async with conn.begin():
                result: list[str] = await conn.run_sync(_upgrade, config)
                return result
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, config: Config) -> list[str]:
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
    applied: list[str] = []

    def on_apply(*, step: Any, **_: Any) -> None:
        if step.is_upgrade and step.up_revision_id:
            applied.append(step.up_revision_id)

    config.attributes["connection"] = connection
    config.attributes["on_version_apply"] = on_apply
    command.upgrade(config, "head")
    return applied


async def current_revision(url: str) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    engine = create_engine(url, foreign_keys=False)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()
