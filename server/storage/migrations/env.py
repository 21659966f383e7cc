"""Alembic environment for the server's storage (SQLite and PostgreSQL, async drivers).

Normally run by :func:`server.storage.migrate.migrate`, which hands over an open connection
(inside its transaction) in ``config.attributes["connection"]``. Run directly by the ``alembic``
command with ``sqlalchemy.url`` set, it opens its own async engine and works through
``run_sync``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from server.storage import partitions
from server.storage.engine import WRITE, create_engine
from server.storage.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    callback = config.attributes.get("on_version_apply")
    options: dict[str, Any] = {"on_version_apply": callback} if callback else {}
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode recreates the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=partitions.include_object,  # run-time partitions are not the schema's
        **options,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url, foreign_keys=False)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{WRITE: True})
            async with conn.begin():
                await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url (or use server.storage.migrate.migrate)")
    asyncio.run(_run_async(url))


_main()
