"""PostgreSQL partitions of the big monitored-data tables: made at run time, dropped whole.

Migration 0003 creates ``metric_points`` and ``metric_rollups`` as ``PARTITION BY LIST
(retention_days)``. Below them this module makes, when data needs them:

    metric_points                      LIST (retention_days)                (the migration)
      metric_points_r30                FOR VALUES IN (30), RANGE (ts)       one per retention
        metric_points_r30_d20270115    FOR VALUES FROM (day) TO (next day)  one per UTC day

(``metric_rollups`` likewise, its days ranged by ``bucket``; bounds are epoch seconds, as the
columns are). Indexes, the rollups' unique index and the foreign keys are declared on the
parents, so PostgreSQL gives every partition its own. The retention purge
(:meth:`Partitions.drop_expired`) drops a day partition once all of it is past its class's
retention — no row is read or deleted — so on PostgreSQL a row is kept at most one day past
its retention (SQLite deletes rows exactly; see ``MonitoringStore.purge``).

Creating or dropping a partition locks its parent (the retention class table) ACCESS
EXCLUSIVE until commit — creating one also locks ``nodes`` SHARE ROW EXCLUSIVE (the foreign
key: node writes wait, reads do not) — so both are done in a short transaction of their own,
with a ``lock_timeout`` (``LOCK_TIMEOUT``) rather than queueing every writer behind a long
reader; the store makes a day's partitions a day before its data arrives.

Creators in several processes are serialised by a transaction-scoped advisory lock, under
which the catalogue is read again and ``CREATE TABLE IF NOT EXISTS`` is used, so racing
processes create each partition once. What exists is cached in the :class:`Partitions` object
(one per store); a partition dropped by another process is noticed by the write that needs it
(PostgreSQL: "no partition of relation … found for row", SQLSTATE 23514), which calls
:meth:`Partitions.forget` and retries.

Every method is a no-op on SQLite. Schema comparisons (alembic ``compare_metadata``) would
report the partitions as tables missing from the MetaData: pass :func:`include_object`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import exc as sa_exc, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

PARTITIONED: Final[dict[str, str]] = {"metric_points": "ts", "metric_rollups": "bucket"}
"""Partitioned table -> the column its days are ranged by."""
DAY: Final = 86_400
MAX_DAYS: Final = 400
"""Most day partitions one :meth:`Partitions.ensure` call may need (a guard against a stray
timestamp creating thousands of tables)."""
LOCK_TIMEOUT: Final = "5s"
LOCK_NOT_AVAILABLE: Final = "55P03"
NO_PARTITION: Final = "23514"
"""SQLSTATE of a row no partition accepts (check_violation)."""
_ADVISORY_KEY: Final = 0x0C0A1E48
"""pg_advisory_xact_lock key of partition DDL (any constant, fixed forever)."""
_FIRST_DAY: Final = 0  # 1970-01-01
_LAST_DAY: Final = 2_932_896  # 9999-12-31
_PREFIXES: Final = ("metric_points_", "metric_rollups_")
_NAME: Final = re.compile(r"(metric_points|metric_rollups)_r([0-9]{1,5})(?:_d([0-9]{8}))?")

_Day = tuple[str, int, int]
"""table, retention days, day number (days since the epoch, UTC)."""


def day_of(ts: float) -> int:
    """The UTC day number of ``ts`` (days since 1970-01-01)."""
    return math.floor(ts / DAY)


def class_table(table: str, retention_days: int) -> str:
    return f"{table}_r{retention_days}"


def day_table(table: str, retention_days: int, day: int) -> str:
    date = datetime.fromtimestamp(day * DAY, UTC)
    return f"{table}_r{retention_days}_d{date.year:04d}{date.month:02d}{date.day:02d}"


def parse_name(name: str) -> tuple[str, int, int | None] | None:
    """(table, retention days, day number or None for a class table) of a partition name."""
    found = _NAME.fullmatch(name)
    if found is None:
        return None
    table, days, date = found.group(1), int(found.group(2)), found.group(3)
    if date is None:
        return table, days, None
    try:
        parsed = datetime.strptime(date, "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return table, days, day_of(parsed.timestamp())


def is_partition(name: str) -> bool:
    return parse_name(name) is not None


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic ``include_object`` hook: leave out the partitions of the partitioned tables —
    reflected tables the MetaData does not have, named ``metric_points_…`` or
    ``metric_rollups_…`` (this module's, and any a test makes). Their indexes and foreign
    keys go with them."""
    partition = reflected and compare_to is None and (name or "").startswith(_PREFIXES)
    return not (type_ == "table" and partition)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, raw or wrapped by SQLAlchemy."""
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


class Partitions:
    """The partitions of one database, as far as this process knows (see the module doc)."""

    def __init__(self) -> None:
        self._days: set[_Day] = set()
        self._classes: set[tuple[str, int]] = set()

    def covers(self, table: str, retention_days: int, ts_min: float, ts_max: float) -> bool:
        """True if every day partition for ``[ts_min, ts_max]`` is known to exist."""
        return all(
            (table, retention_days, day) in self._days
            for day in range(day_of(ts_min), day_of(ts_max) + 1)
        )

    def forget(self) -> None:
        """Drop the cache (after a failed DDL transaction, or a partition found missing)."""
        self._days.clear()
        self._classes.clear()

    async def ensure(
        self,
        conn: AsyncConnection,
        table: str,
        retention_days: int,
        ts_min: float,
        ts_max: float,
    ) -> int:
        """Create what is missing of ``table``'s partitions for ``retention_days`` and the
        days of ``[ts_min, ts_max]``; return how many tables were created. Call it in a
        transaction of its own (it takes locks held until commit, and sets lock_timeout);
        if that transaction fails, call :meth:`forget`."""
        if conn.dialect.name != "postgresql":
            return 0
        column = PARTITIONED.get(table)
        if column is None:
            raise ValueError(f"{table!r} is not partitioned (one of {sorted(PARTITIONED)})")
        if not 1 <= retention_days <= 32_767:
            raise ValueError(f"retention_days must be 1..32767, not {retention_days}")
        first, last = day_of(ts_min), day_of(ts_max)
        if not _FIRST_DAY <= first <= last <= _LAST_DAY or last - first >= MAX_DAYS:
            raise ValueError(
                f"partitions for {ts_min!r}..{ts_max!r} refused: at most {MAX_DAYS} days, "
                "between 1970 and 9999"
            )
        if self.covers(table, retention_days, ts_min, ts_max):
            return 0
        await self._lock(conn)
        await self._load(conn)
        created = 0
        parent = class_table(table, retention_days)
        if (table, retention_days) not in self._classes:
            await conn.execute(
                text(
                    f'CREATE TABLE IF NOT EXISTS "{parent}" PARTITION OF "{table}" '
                    f'FOR VALUES IN ({retention_days}) PARTITION BY RANGE ("{column}")'
                )
            )
            self._classes.add((table, retention_days))
            created += 1
        for day in range(first, last + 1):
            if (table, retention_days, day) in self._days:
                continue
            await conn.execute(
                text(
                    f'CREATE TABLE IF NOT EXISTS "{day_table(table, retention_days, day)}" '
                    f'PARTITION OF "{parent}" FOR VALUES FROM ({day * DAY}) TO ({(day + 1) * DAY})'
                )
            )
            self._days.add((table, retention_days, day))
            created += 1
        return created

    async def drop_expired(self, conn: AsyncConnection, now: float) -> int:
        """Drop every day partition whose upper bound is at or before ``now`` minus its
        class's retention; return how many. A partition whose lock cannot be had within
        LOCK_TIMEOUT is left for the next purge. Call it in a transaction of its own."""
        if conn.dialect.name != "postgresql":
            return 0
        await self._lock(conn)
        await self._load(conn)
        dropped = 0
        for table, days, day in sorted(self._days):
            if (day + 1) * DAY > now - days * DAY:
                continue
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        text(f'DROP TABLE IF EXISTS "{day_table(table, days, day)}"')
                    )
            except sa_exc.DBAPIError as exc:
                if sqlstate(exc) != LOCK_NOT_AVAILABLE:
                    raise
                continue
            self._days.discard((table, days, day))
            dropped += 1
        return dropped

    async def _lock(self, conn: AsyncConnection) -> None:
        await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        await conn.execute(select(func.pg_advisory_xact_lock(_ADVISORY_KEY)))

    async def _load(self, conn: AsyncConnection) -> None:
        """Read the partitions that exist (in the current schema) into the cache."""
        rows = await conn.execute(
            text(
                "SELECT c.relname AS name, p.relname AS parent FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE c.relnamespace = p.relnamespace AND pg_table_is_visible(p.oid) "
                "AND p.relname LIKE 'metric\\_%'"
            )
        )
        days: set[_Day] = set()
        classes: set[tuple[str, int]] = set()
        for row in rows:
            parsed = parse_name(row.name)
            if parsed is None:
                continue
            table, retention, day = parsed
            if day is None and row.parent == table:
                classes.add((table, retention))
            elif day is not None and row.parent == class_table(table, retention):
                days.add((table, retention, day))
        self._days, self._classes = days, classes
