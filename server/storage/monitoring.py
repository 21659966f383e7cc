"""Saved monitoring's data in storage (opt-in only): raw points, rollups and their history, the
retention purge and plan changes; alert history, delivery attempts and the delivery queue come
from :class:`~server.storage.alert_log.AlertLogStore`. Every record type is re-exported here.

Writes return how many rows they wrote:

``write_points(points, retention)``
    Raw samples; ``retention`` maps account id -> its plan's retention days (0 or missing:
    dropped). PostgreSQL: one COPY into the parent table (the partitions route the rows);
    SQLite: one executemany (:mod:`server.storage.bulk`).
``write_rollups(rollups)``
    Upserts that merge with a stored row of the same series, resolution, bucket and retention
    (min of mins, max of maxes, sums and counts added), so a bucket written in two parts —
    before and after a restart — adds up. Rollups come from :class:`RollupAccumulator`.

Each write re-checks the consent inside its own transaction (:mod:`server.storage.consent_guard`)
and drops, silently, rows of accounts without consent, of nodes the consent does not cover,
and of nodes that are not the account's. Points and rollups are stored under the retention of
the account's plan as read in that transaction, whatever the caller passed — so rows never
land in a stale retention class (:meth:`MonitoringStore.reclass` moves the older ones).
Labels too long to index (``MAX_LABEL_CHARS`` / ``MAX_LABEL_BYTES``) are dropped too.

Reads: ``history(node_id, metric, start, end, step)`` (:mod:`server.storage.series`).
Retention: ``purge(now)``, ``reclass(account_id, retention_days, now)`` and
``reclass_stale(now)`` (the purge job's self-healing check). PostgreSQL
partitions: :mod:`server.storage.partitions`, made here before a write needs them (and a day
ahead), in transactions of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final

from sqlalchemy import Integer, Table, delete, exists, func, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement

from server.errors import Unavailable
from server.plans import PLANS
from server.storage.alert_log import AlertLogStore, dialect_insert
from server.storage.base import shielded
from server.storage.bulk import (
    POINT_COLUMNS,
    ROLLUP_COLUMNS,
    ROLLUP_KEY,
    SQLITE_POINTS_INSERT,
    NoPartition,
    copy_rows,
    sqlite_executemany,
    upsert_rollups,
)
from server.storage.consent_guard import read_guard
from server.storage.monitored import (
    RESOLUTIONS,
    AlertRow,
    AttemptRow,
    History,
    Point,
    QueuedDelivery,
    Rollup,
    RollupAccumulator,
    SeriesHistory,
    series_labels,
    stored_value,
)
from server.storage.partitions import DAY, Partitions
from server.storage.schema import (
    accounts,
    alert_history,
    delivery_attempts,
    delivery_queue,
    metric_points,
    metric_rollups,
    nodes,
    webhook_endpoints,
)
from server.storage.series import MAX_BUCKETS, check_range, read_history

__all__ = [
    "MAX_BUCKETS",
    "AlertRow",
    "AttemptRow",
    "History",
    "MonitoringStore",
    "Point",
    "QueuedDelivery",
    "Rollup",
    "RollupAccumulator",
    "SeriesHistory",
    "series_labels",
    "stored_value",
]

log = logging.getLogger("oneconnect.server.storage")

MAX_LABEL_CHARS: Final = 1700
MAX_LABEL_BYTES: Final = 2500
"""Labels longer than this (characters; UTF-8 bytes) are not stored: the column holds 1700
characters, and a btree entry (the rollups' unique index holds the labels) must stay < 2.7 kB."""
SQLITE_PURGE_ROWIDS: Final = 100_000
"""SQLite purge: rowids per delete transaction, so writers get the lock in between."""

_Spans = dict[int, tuple[float, float]]
"""retention days -> (earliest, latest) time of a batch's rows of that class."""


def _storable(labels: str) -> bool:
    return len(labels) <= MAX_LABEL_CHARS and (
        labels.isascii() or len(labels.encode()) <= MAX_LABEL_BYTES
    )


def _spans(rows: Sequence[tuple[Any, ...]], days_at: int, ts_at: int) -> _Spans:
    """The retention classes of ``rows``, each with the time range of the whole batch (a class
    may get a partition for a day only another class needed: harmless)."""
    times = [row[ts_at] for row in rows]
    lo, hi = min(times), max(times)
    return {days: (lo, hi) for days in {row[days_at] for row in rows}}


class _Missing(Exception):
    """Partitions this write needs are not (known to be) there: make them, then retry."""

    def __init__(self, spans: _Spans) -> None:
        super().__init__("partitions missing")
        self.spans = spans


class MonitoringStore(AlertLogStore):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._partition_cache = Partitions()

    @property
    def _on_postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    # -- partitions --------------------------------------------------------------------------
    def _partitions_known(self, table: Table, spans: _Spans) -> bool:
        return not self._on_postgres or all(
            self._partition_cache.covers(table.name, d, lo, hi) for d, (lo, hi) in spans.items()
        )

    async def _make_partitions(self, table: Table, spans: _Spans) -> None:
        """Make the partitions for ``spans`` in a transaction of their own."""
        if self._partitions_known(table, spans):
            return
        try:
            async with self._tx(write=True) as conn:
                for days, (lo, hi) in sorted(spans.items()):
                    await self._partition_cache.ensure(conn, table.name, days, lo, hi)
        except BaseException:
            self._partition_cache.forget()
            raise

    async def _write_partitioned(
        self, table: Table, write: Callable[[], Awaitable[tuple[int, _Spans]]]
    ) -> int:
        """Run ``write`` (one transaction); when it finds partitions missing, make them and
        run it again (twice at most: a partition another process dropped meanwhile). Then
        make the next day's partitions, so no writer waits for DDL at midnight (a failure
        there is only logged: the write that needs them tries again)."""
        for _ in range(3):
            try:
                written, spans = await write()
            except _Missing as missing:
                await self._make_partitions(table, missing.spans)
                continue
            ahead = {d: (hi + DAY, hi + DAY) for d, (_lo, hi) in spans.items()}
            try:
                await self._make_partitions(table, ahead)
            except Exception as exc:
                log.warning("could not make tomorrow's partitions of %s (%s)", table.name, exc)
            return written
        raise Unavailable(f"partitions of {table.name} keep disappearing")

    async def _bulk_write(
        self, table: Table, spans: _Spans, write: Callable[[], Awaitable[None]]
    ) -> None:
        """Run the bulk ``write`` if the partitions are known to exist; else (or if the
        database says one is gone) raise _Missing for :meth:`_write_partitioned`."""
        if not self._partitions_known(table, spans):
            raise _Missing(spans)
        try:
            await write()
        except NoPartition:
            self._partition_cache.forget()
            raise _Missing(spans) from None

    # -- raw points --------------------------------------------------------------------------
    @shielded
    async def write_points(self, points: Sequence[Point], retention: Mapping[str, int]) -> int:
        """Write the points the consent allows (see the module doc); return how many."""
        if not points:
            return 0
        return await self._write_partitioned(
            metric_points, lambda: self._write_points_tx(points, retention)
        )

    async def _write_points_tx(
        self, points: Sequence[Point], retention: Mapping[str, int]
    ) -> tuple[int, _Spans]:
        wanted = {p.account_id for p in points if retention.get(p.account_id, 0) > 0}
        if not wanted:
            return 0, {}
        async with self._tx(write=True) as conn:
            allowed = (await read_guard(conn, wanted, {p.node_id for p in points})).nodes
            rows = []
            for p in points:  # the hot loop: 50,000 points a second
                found = allowed.get(p.node_id)
                if found is None or found[0] != p.account_id:
                    continue
                labels = p.labels
                if len(labels) > MAX_LABEL_CHARS or not (labels.isascii() or _storable(labels)):
                    continue
                rows.append((p.node_id, p.metric, labels, p.ts, p.value, found[1]))
            if not rows:
                return 0, {}
            spans = _spans(rows, 5, 3)
            if self._on_postgres:
                copy = partial(copy_rows, conn, "metric_points", POINT_COLUMNS, rows)
                await self._bulk_write(metric_points, spans, copy)
            else:
                await sqlite_executemany(conn, SQLITE_POINTS_INSERT, rows)
        return len(rows), spans

    # -- rollups -----------------------------------------------------------------------------
    @shielded
    async def write_rollups(self, rollups: Sequence[Rollup]) -> int:
        """Merge the rollups the consent allows into storage; return how many rows were
        upserted (rollups of one series, resolution and bucket count once). A bucket is
        aligned down to a multiple of its resolution (the accumulator's are); resolutions
        other than 60 and 3600 s, and empty rollups, are dropped."""
        if not rollups:
            return 0
        return await self._write_partitioned(
            metric_rollups, lambda: self._write_rollups_tx(rollups)
        )

    async def _write_rollups_tx(self, rollups: Sequence[Rollup]) -> tuple[int, _Spans]:
        async with self._tx(write=True) as conn:
            guard = await read_guard(
                conn, {r.account_id for r in rollups}, {r.node_id for r in rollups}
            )
            merged: dict[tuple[Any, ...], list[float]] = {}
            for r in rollups:
                days = guard.node_days(r.account_id, r.node_id)
                if not days or r.resolution not in RESOLUTIONS or r.count <= 0:
                    continue
                if not _storable(r.labels):
                    continue
                bucket = r.bucket - r.bucket % r.resolution
                key = (r.node_id, r.metric, r.labels, r.resolution, bucket, days)
                acc = merged.get(key)
                if acc is None:
                    merged[key] = [r.min, r.max, r.sum, r.count]
                else:
                    acc[0], acc[1] = min(acc[0], r.min), max(acc[1], r.max)
                    acc[2] += r.sum
                    acc[3] += r.count
            if not merged:
                return 0, {}
            rows = [(*k[:5], lo, hi, s, int(n), k[5]) for k, (lo, hi, s, n) in merged.items()]
            spans = _spans(rows, 9, 4)
            await self._bulk_write(metric_rollups, spans, partial(upsert_rollups, conn, rows))
        return len(rows), spans

    # -- history -----------------------------------------------------------------------------
    @shielded
    async def history(
        self, node_id: str, metric: str, start: float, end: float, step: float
    ) -> History:
        """The series of ``metric`` on the node over ``[start, end)`` in ``step``-second
        buckets, from raw points (step < 60 s), minute rollups (< 3600 s) or hour rollups
        (:mod:`server.storage.series`). ValueError for an empty range, a step that is not
        positive, or more than MAX_BUCKETS buckets."""
        check_range(start, end, step)  # before a connection is taken
        async with self._tx() as conn:
            return await read_history(conn, node_id, metric, start, end, step)

    # -- retention ---------------------------------------------------------------------------
    @shielded
    async def purge(self, now: float) -> dict[str, int]:
        """The retention job: what is past its retention at ``now`` goes. Returns rows deleted
        per table, and ``partitions`` dropped.

        PostgreSQL: day partitions of points and rollups are dropped whole once their last
        second is past their class's retention (no row is read), so a row outlives its
        retention by less than a day. Every row lives in a day partition (the class tables
        have no default partition), so nothing is left to delete row by row. SQLite: rows
        with ``ts`` (rollups: ``bucket``) before ``now - retention_days * 86400`` are deleted,
        in rowid ranges of SQLITE_PURGE_ROWIDS per transaction (a scan of the table, which
        has no index on time; writers get the lock between ranges). Alert history, delivery
        attempts and the queue: rows with ``expires_at < now`` (indexed), on both."""
        counts = dict.fromkeys(
            ("metric_points", "metric_rollups", "alert_history", "delivery_attempts"), 0
        )
        counts["delivery_queue"] = counts["partitions"] = 0
        if self._on_postgres:
            try:
                async with self._tx(write=True) as conn:
                    counts["partitions"] = await self._partition_cache.drop_expired(conn, now)
            except BaseException:
                self._partition_cache.forget()
                raise
        else:
            counts["metric_points"] = await self._purge_sqlite_rows(metric_points, "ts", now)
            counts["metric_rollups"] = await self._purge_sqlite_rows(metric_rollups, "bucket", now)
        for table in (alert_history, delivery_attempts, delivery_queue):
            async with self._tx(write=True) as conn:
                result = await conn.execute(delete(table).where(table.c.expires_at < now))
                counts[table.name] = result.rowcount
        return counts

    async def _purge_sqlite_rows(self, table: Table, time_column: str, now: float) -> int:
        rowid: ColumnElement[int] = literal_column("rowid", Integer)
        async with self._tx() as conn:
            last = await conn.scalar(select(func.max(rowid)).select_from(table))
        deleted = 0
        for low in range(0, int(last or 0) + 1, SQLITE_PURGE_ROWIDS):
            async with self._tx(write=True) as conn:
                result = await conn.execute(
                    delete(table).where(
                        rowid >= low,
                        rowid < low + SQLITE_PURGE_ROWIDS,
                        table.c[time_column] < now - table.c.retention_days * DAY,
                    )
                )
                deleted += result.rowcount
        return deleted

    @shielded
    async def reclass(self, account_id: str, retention_days: int, now: float) -> int:
        """The account's plan changed to one keeping ``retention_days`` (call it after the
        change committed): delete its monitored rows older than that, move the rest of its
        points and rollups to the new retention class (rollups merge with rows already there;
        on PostgreSQL an UPDATE of the partition key moves rows between partitions, made
        first) and set ``expires_at`` of its alert history and attempts to their time plus
        the new retention (a queued delivery's expiry only ever shortens). 0 deletes every
        monitored row of the account. Returns the rows deleted or changed."""
        if retention_days <= 0:
            return await self._delete_all_monitored(account_id)
        cutoff = now - retention_days * DAY
        node_ids = select(nodes.c.id).where(nodes.c.account_id == account_id)
        if self._on_postgres:
            await self._make_reclass_partitions(node_ids, retention_days, cutoff)
        changed = 0
        async with self._tx(write=True) as conn:
            for table, column in ((metric_points, "ts"), (metric_rollups, "bucket")):
                result = await conn.execute(
                    delete(table).where(table.c.node_id.in_(node_ids), table.c[column] < cutoff)
                )
                changed += result.rowcount
            result = await conn.execute(
                update(metric_points)
                .where(
                    metric_points.c.node_id.in_(node_ids),
                    metric_points.c.retention_days != retention_days,
                )
                .values(retention_days=retention_days)
            )
            changed += result.rowcount
            changed += await self._reclass_rollups(conn, node_ids, retention_days)
            changed += await self._reexpire_alert_log(conn, account_id, retention_days, now)
        return changed

    @shielded
    async def reclass_stale(self, now: float) -> int:
        """The purge job's self-healing check: :meth:`reclass` every account that holds rows
        kept longer than its plan keeps, as when the reclass after a plan change never ran:
        points or rollups of a longer retention class, attempts expiring over a day later than
        their time plus the plan's retention, alert history expiring over a day later than
        ``now`` plus it (an alert's ``ts`` is the agent's clock, its expiry the server's). Only
        plans shorter than the longest are looked at, by index probes per node and endpoint
        (on PostgreSQL in the longer classes' partitions only). Returns how many accounts it
        re-classed."""
        longest = max(plan.retention_days for plan in PLANS.values())
        stale: list[tuple[str, int]] = []
        async with self._tx() as conn:
            for plan in PLANS.values():
                days = plan.retention_days
                if days >= longest:
                    continue
                slack = (days + 1) * DAY
                mine = nodes.c.account_id == accounts.c.id
                kept_longer = [
                    exists().where(
                        mine, table.c.node_id == nodes.c.id, table.c.retention_days > days
                    )
                    for table in (metric_points, metric_rollups)
                ]
                a, d = alert_history, delivery_attempts
                kept_longer.append(
                    exists().where(mine, a.c.node_id == nodes.c.id, a.c.expires_at > now + slack)
                )
                kept_longer.append(
                    exists().where(
                        webhook_endpoints.c.account_id == accounts.c.id,
                        d.c.endpoint_id == webhook_endpoints.c.id,
                        d.c.expires_at > d.c.at + slack,
                    )
                )
                rows = await conn.execute(
                    select(accounts.c.id).where(accounts.c.plan == plan.name, or_(*kept_longer))
                )
                stale += [(row.id, days) for row in rows]
        for account_id, days in stale:
            log.warning("saved rows of an account outlived its plan change: re-classing them")
            await self.reclass(account_id, days, now)
        return len(stale)

    async def _make_reclass_partitions(self, node_ids: Any, days: int, cutoff: float) -> None:
        """The target partitions of a reclass: the days of the rows that will move."""
        spans: dict[Table, _Spans] = {}
        async with self._tx() as conn:
            for table, column in ((metric_points, "ts"), (metric_rollups, "bucket")):
                lo, hi = (
                    await conn.execute(
                        select(func.min(table.c[column]), func.max(table.c[column])).where(
                            table.c.node_id.in_(node_ids),
                            table.c.retention_days != days,
                            table.c[column] >= cutoff,
                        )
                    )
                ).one()
                if lo is not None:
                    spans[table] = {days: (lo, hi)}
        for table, span in spans.items():
            await self._make_partitions(table, span)

    async def _reclass_rollups(self, conn: AsyncConnection, node_ids: Any, days: int) -> int:
        """Merge the rollups of other classes into ``days`` (one class at a time: ON CONFLICT
        DO UPDATE may meet each key once per statement), then delete them."""
        r = metric_rollups
        old = await conn.execute(
            select(r.c.retention_days)
            .where(r.c.node_id.in_(node_ids), r.c.retention_days != days)
            .distinct()
        )
        least, greatest = (func.least, func.greatest) if self._on_postgres else (func.min, func.max)
        moved = 0
        for (old_days,) in old.all():
            mine = [r.c.node_id.in_(node_ids), r.c.retention_days == old_days]
            source = select(
                *[r.c[c] for c in ROLLUP_COLUMNS if c != "retention_days"],
                literal_column(str(int(days))),
            ).where(*mine)
            stmt = dialect_insert(conn, r).from_select(list(ROLLUP_COLUMNS), source)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=list(ROLLUP_KEY),
                    set_={
                        "min": least(r.c.min, stmt.excluded.min),
                        "max": greatest(r.c.max, stmt.excluded.max),
                        "sum": r.c.sum + stmt.excluded.sum,
                        "count": r.c.count + stmt.excluded.count,
                    },
                )
            )
            moved += (await conn.execute(delete(r).where(*mine))).rowcount
        return moved

    async def _reexpire_alert_log(
        self, conn: AsyncConnection, account_id: str, days: int, now: float
    ) -> int:
        keep = days * DAY
        mine = select(nodes.c.id).where(nodes.c.account_id == account_id)
        endpoints = select(webhook_endpoints.c.id).where(
            webhook_endpoints.c.account_id == account_id
        )
        a, d, q = alert_history, delivery_attempts, delivery_queue
        changed = 0
        for stmt in (
            delete(a).where(a.c.node_id.in_(mine), a.c.ts + keep <= now),
            update(a).where(a.c.node_id.in_(mine)).values(expires_at=a.c.ts + keep),
            delete(d).where(d.c.endpoint_id.in_(endpoints), d.c.at + keep <= now),
            update(d).where(d.c.endpoint_id.in_(endpoints)).values(expires_at=d.c.at + keep),
            delete(q).where(q.c.node_id.in_(mine), q.c.created_at + keep <= now),
            update(q)
            .where(q.c.node_id.in_(mine), q.c.expires_at > q.c.created_at + keep)
            .values(expires_at=q.c.created_at + keep),
        ):
            changed += (await conn.execute(stmt)).rowcount
        return changed

    async def _delete_all_monitored(self, account_id: str) -> int:
        mine = select(nodes.c.id).where(nodes.c.account_id == account_id)
        endpoints = select(webhook_endpoints.c.id).where(
            webhook_endpoints.c.account_id == account_id
        )
        deleted = 0
        async with self._tx(write=True) as conn:
            for table in (metric_points, metric_rollups, alert_history, delivery_queue):
                result = await conn.execute(delete(table).where(table.c.node_id.in_(mine)))
                deleted += result.rowcount
            result = await conn.execute(
                delete(delivery_attempts).where(delivery_attempts.c.endpoint_id.in_(endpoints))
            )
            deleted += result.rowcount
        return deleted
