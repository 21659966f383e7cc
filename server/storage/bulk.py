"""Bulk writes of points and rollups through the drivers themselves, inside a transaction that
SQLAlchemy began (the consent guard ran in it first).

    await copy_rows(conn, "metric_points", POINT_COLUMNS, rows)       # PostgreSQL: COPY
    await upsert_rollups(conn, rows)                                 # either database
    await sqlite_executemany(conn, SQLITE_POINTS_INSERT, rows)       # SQLite

Rows are tuples in the column order of ``POINT_COLUMNS`` / ``ROLLUP_COLUMNS``: no per-row dict,
no SQLAlchemy parameter processing — the ingest hot path writes 50,000 points a second. Driver
errors are translated: a row no partition accepts raises :class:`NoPartition` (the caller
makes the partitions and retries), a lost connection :class:`~server.errors.Unavailable`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from server.errors import Unavailable
from server.storage.partitions import NO_PARTITION, sqlstate

POINT_COLUMNS: Final = ("node_id", "metric", "labels", "ts", "value", "retention_days")
ROLLUP_KEY: Final = ("node_id", "metric", "resolution", "labels", "bucket", "retention_days")
"""The columns of the rollups' unique index: what an upsert merges on."""
ROLLUP_COLUMNS: Final = (
    "node_id", "metric", "labels", "resolution", "bucket", "min", "max", "sum", "count",
    "retention_days",
)  # fmt: skip

SQLITE_POINTS_INSERT: Final = """
INSERT INTO metric_points (node_id, metric, labels, ts, value, retention_days)
VALUES (?, ?, ?, ?, ?, ?)
"""
SQLITE_ROLLUP_UPSERT: Final = """
INSERT INTO metric_rollups
    (node_id, metric, labels, resolution, bucket, min, max, sum, count, retention_days)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (node_id, metric, resolution, labels, bucket, retention_days) DO UPDATE SET
    min = min(metric_rollups.min, excluded.min), max = max(metric_rollups.max, excluded.max),
    sum = metric_rollups.sum + excluded.sum, count = metric_rollups.count + excluded.count
"""
PG_STAGE: Final = "oc_rollup_stage"
PG_STAGE_CREATE: Final = """
CREATE TEMP TABLE IF NOT EXISTS oc_rollup_stage (
    node_id varchar, metric varchar, labels varchar, resolution integer, bucket float8,
    min float8, max float8, sum float8, count integer, retention_days smallint
) ON COMMIT DELETE ROWS
"""
PG_ROLLUP_UPSERT: Final = """
INSERT INTO metric_rollups AS r
    (node_id, metric, labels, resolution, bucket, min, max, sum, count, retention_days)
SELECT node_id, metric, labels, resolution, bucket, min, max, sum, count, retention_days
FROM oc_rollup_stage
ON CONFLICT (node_id, metric, resolution, labels, bucket, retention_days) DO UPDATE SET
    min = LEAST(r.min, EXCLUDED.min), max = GREATEST(r.max, EXCLUDED.max),
    sum = r.sum + EXCLUDED.sum, count = r.count + EXCLUDED.count
"""
"""PostgreSQL rollups: the batch is COPied into a session-local staging table (emptied at
every commit), then merged by one INSERT … SELECT … ON CONFLICT. (Array parameters to
unnest() were tried: asyncpg's per-element type checks cost more than the upsert itself.)"""


class NoPartition(Exception):
    """A row fell outside every partition (SQLSTATE 23514): partitions must be made."""


async def copy_rows(
    conn: AsyncConnection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """PostgreSQL: COPY ``rows`` (binary) through asyncpg, in ``conn``'s transaction."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    try:
        await raw.copy_records_to_table(table, records=rows, columns=list(columns))
    except asyncpg.PostgresError as exc:
        if sqlstate(exc) == NO_PARTITION:
            raise NoPartition(table) from exc
        raise
    except (asyncpg.InterfaceError, OSError) as exc:
        raise Unavailable("storage is not reachable") from exc


async def sqlite_executemany(conn: AsyncConnection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """SQLite: executemany on the aiosqlite connection under ``conn``, in its transaction."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    try:
        await raw.executemany(sql, rows)
    except sqlite3.OperationalError as exc:
        raise Unavailable("storage is not reachable") from exc


async def upsert_rollups(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
    """Merge rollup rows (each key once) into ``metric_rollups``."""
    if conn.dialect.name != "postgresql":
        await sqlite_executemany(conn, SQLITE_ROLLUP_UPSERT, rows)
        return
    await conn.exec_driver_sql(PG_STAGE_CREATE)
    await copy_rows(conn, PG_STAGE, ROLLUP_COLUMNS, rows)
    try:
        await conn.exec_driver_sql(PG_ROLLUP_UPSERT)
    except Exception as exc:
        if sqlstate(exc) == NO_PARTITION:
            raise NoPartition("metric_rollups") from exc
        raise
