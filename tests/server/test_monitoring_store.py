"""Saved monitoring's storage on SQLite and PostgreSQL: the consent guard of every write, points,
rollups, history, alert history, attempts, the delivery queue, retention (purge and plan
changes, by moving ``now``), partitions, cascades.

Accounts, nodes and endpoints are made through the Store; the consent row is inserted directly
(the consent API is tested elsewhere)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from agent.protocol import AlertEvent
from server.storage import monitoring, partitions
from server.storage.engine import WRITE
from server.storage.monitoring import (
    MAX_BUCKETS,
    AlertRow,
    AttemptRow,
    Point,
    QueuedDelivery,
    Rollup,
    RollupAccumulator,
    series_labels,
    stored_value,
)
from server.storage.schema import (
    MONITORED_TABLES,
    accounts,
    delivery_attempts,
    metadata,
    metric_points,
    metric_rollups,
    saved_monitoring,
)
from server.storage.store import Store
from tests.server.accounts_kit import all_rows
from tests.server.rights_kit import Seeded, seed_account

DAY = 86_400
T0 = 1_800_000_000.0
"""2027-01-15 08:00:00 UTC: a whole hour (and minute)."""
DAY0 = T0 - T0 % DAY
"""The start of T0's UTC day."""
ETH0 = series_labels({"interface": "eth0"})
ETH1 = series_labels({"interface": "eth1"})


# -- helpers ----------------------------------------------------------------------------------
async def consent(store: Store, account_id: str, nodes: Sequence[str] | None = None) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(saved_monitoring).values(
                account_id=account_id,
                consented_at=T0,
                consented_by="api_key:test",
                nodes=None if nodes is None else list(nodes),
                updated_at=T0,
            )
        )


async def revoke(store: Store, account_id: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            delete(saved_monitoring).where(saved_monitoring.c.account_id == account_id)
        )


async def counts(store: Store) -> dict[str, int]:
    async with store.engine.connect() as conn:
        return {
            t.name: int(await conn.scalar(select(func.count()).select_from(t)) or 0)
            for t in MONITORED_TABLES
        }


def points(who: Seeded, node_id: str, start: float, n: int, labels: str = "") -> list[Point]:
    """``n`` points one second apart from ``start``, value = index."""
    return [Point(who.id, node_id, "cpu", labels, start + i, float(i)) for i in range(n)]


def rollup(who: Seeded, node_id: str, bucket: float, **values: Any) -> Rollup:
    fields: dict[str, Any] = {"resolution": 60, "min": 1.0, "max": 3.0, "sum": 4.0, "count": 2}
    fields.update(values)
    return Rollup(
        who.id, node_id, "cpu", "", fields["resolution"], bucket, fields["min"], fields["max"],
        fields["sum"], fields["count"], fields.get("retention_days", 30),
    )  # fmt: skip


def event(n: int = 1, ts: float = T0) -> AlertEvent:
    return AlertEvent(
        id=f"evt-{n:08d}",
        fingerprint="0123456789abcdef",
        rule="cpu_high",
        status="firing",
        severity="critical",
        metric="cpu",
        labels={"cpu": "total"},
        value="<5" if n % 2 else 93.5,
        threshold=90.0,
        summary="CPU high",
        started_at=ts - 60,
        ts=ts,
    )


def attempt(who: Seeded, n: int = 1, at: float = T0) -> AttemptRow:
    return AttemptRow(
        account_id=who.id,
        endpoint_id=who.endpoint_ids[0],
        msg_id=f"msg_{n}",
        attempt=n,
        at=at,
        status=200,
        latency_ms=12.5,
        outcome="delivered",
        detail="",
        expires_at=at + 30 * DAY,
    )


def queued(who: Seeded, node_id: str, n: int = 1, created: float = T0) -> QueuedDelivery:
    return QueuedDelivery(
        account_id=who.id,
        msg_id=f"msg_{node_id[:6]}_{n}",
        endpoint_id=who.endpoint_ids[0],
        node_id=node_id,
        notice={"event": {"id": f"evt-{n:08d}"}, "node_name": "vpn"},
        created_at=created,
        expires_at=created + DAY,
    )


async def write_everything(
    store: Store, who: Seeded, node_id: str, at: float = T0
) -> dict[str, int]:
    """One row of each kind for ``node_id``; what each write returned."""
    return {
        "points": await store.write_points(points(who, node_id, at, 3), {who.id: 30}),
        "rollups": await store.write_rollups([rollup(who, node_id, at)]),
        "alerts": await store.write_alerts(
            [AlertRow.of(who.id, node_id, event(int(at) % 1000), at + 30 * DAY)]
        ),
        "attempts": await store.write_attempts([attempt(who, 1, at)]),
        "queue": await store.queue_put([queued(who, node_id, 1, at)]),
    }


async def pg_partitions(store: Store, parent: str) -> list[str]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :parent ORDER BY 1"
            ),
            {"parent": parent},
        )
        return [r.relname for r in rows]


def is_pg(store: Store) -> bool:
    return store.engine.dialect.name == "postgresql"


# -- pure parts -------------------------------------------------------------------------------
def test_series_labels_and_stored_values() -> None:
    assert series_labels({}) == ""
    assert series_labels({"b": "2", "a": "ü"}) == '{"a":"ü","b":"2"}'
    assert stored_value("<5") == 4.5
    assert stored_value("<100") == 99.5
    assert stored_value(3) == 3.0
    with pytest.raises(ValueError, match="coarsened"):
        stored_value("5")


def test_accumulator_closes_buckets_when_their_window_ends() -> None:
    acc = RollupAccumulator()
    start = T0 + 3000  # 08:50:00
    for i in range(130):  # 08:50:00 .. 08:52:09, value i
        acc.add(Point("a", "n", "cpu", "", start + i, float(i)), 30)
    assert acc.closed(start + 59.9) == []
    first = acc.closed(start + 60)
    assert [(r.resolution, r.bucket, r.min, r.max, r.sum, r.count) for r in first] == [
        (60, start, 0.0, 59.0, float(sum(range(60))), 60)
    ]
    assert first[0].retention_days == 30
    assert first[0].account_id == "a"
    assert acc.closed(start + 60) == []  # forgotten once returned
    second = acc.closed(start + 125)
    assert [(r.bucket, r.count) for r in second] == [(start + 60, 60)]
    third = acc.closed(start + 180)
    assert [(r.resolution, r.bucket, r.count) for r in third] == [(60, start + 120, 10)]
    assert acc.closed(T0 + 3599.9) == []
    hour = acc.closed(T0 + 3600)
    assert [(r.resolution, r.bucket, r.min, r.max, r.count) for r in hour] == [
        (3600, T0, 0.0, 129.0, 130)
    ]
    assert len(acc) == 0


def test_accumulator_keeps_series_apart_and_drains() -> None:
    acc = RollupAccumulator()
    acc.add(Point("a", "n", "cpu", ETH0, T0, 1.0), 30)
    acc.add(Point("a", "n", "cpu", ETH1, T0, 5.0), 30)
    acc.add(Point("a", "n", "cpu", ETH0, T0 + 1, 3.0), 30)
    assert len(acc) == 2  # the minute buckets (an hour is counted once a minute folds in)
    drained = acc.drain()
    minute = sorted((r.labels, r.min, r.max, r.sum, r.count) for r in drained if r.resolution == 60)
    assert minute == [(ETH0, 1.0, 3.0, 4.0, 2), (ETH1, 5.0, 5.0, 5.0, 1)]
    assert len(drained) == 4
    assert acc.drain() == []


def test_accumulator_reopens_a_bucket_for_a_late_point() -> None:
    acc = RollupAccumulator()
    acc.add(Point("a", "n", "cpu", "", T0 + 5, 1.0), 30)
    assert [(r.resolution, r.count) for r in acc.closed(T0 + 60)] == [(60, 1)]
    acc.add(Point("a", "n", "cpu", "", T0 + 6, 7.0), 30)  # late: its minute was written
    acc.add(Point("a", "n", "cpu", "", T0 + 6, 9.0), 30)  # same time as the last add
    late = acc.closed(T0 + 3600)
    assert sorted((r.resolution, r.bucket, r.min, r.max, r.count) for r in late) == [
        (60, T0, 7.0, 9.0, 2),
        (3600, T0, 1.0, 9.0, 3),
    ]


# -- the consent guard ------------------------------------------------------------------------
async def test_without_consent_nothing_is_written_anywhere(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    node = who.node_ids[0]
    assert await write_everything(store, who, node) == dict.fromkeys(
        ("points", "rollups", "alerts", "attempts", "queue"), 0
    )
    assert await counts(store) == dict.fromkeys((t.name for t in MONITORED_TABLES), 0)


async def test_a_plan_without_saved_monitoring_writes_nothing_even_with_a_consent_row(
    store: Store,
) -> None:
    who = await seed_account(store, plan="free")
    await consent(store, who.id)
    written = await write_everything(store, who, who.node_ids[0])
    assert set(written.values()) == {0}
    assert set((await counts(store)).values()) == {0}


async def test_consent_writes_every_kind(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    written = await write_everything(store, who, who.node_ids[0])
    assert written == {"points": 3, "rollups": 1, "alerts": 1, "attempts": 1, "queue": 1}
    assert await counts(store) == {
        "metric_points": 3,
        "metric_rollups": 1,
        "alert_history": 1,
        "delivery_attempts": 1,
        "delivery_queue": 1,
    }


async def test_consent_narrowed_to_one_node_keeps_only_that_nodes_rows(store: Store) -> None:
    who = await seed_account(store, plan="pro", nodes=2)
    chosen, other = who.node_ids
    await consent(store, who.id, nodes=[chosen])
    mixed = points(who, chosen, T0, 2) + points(who, other, T0, 5)
    assert await store.write_points(mixed, {who.id: 30}) == 2
    assert await store.write_rollups([rollup(who, chosen, T0), rollup(who, other, T0)]) == 1
    alerts = [AlertRow.of(who.id, n, event(1), T0 + DAY) for n in (chosen, other)]
    assert await store.write_alerts(alerts) == 1
    assert await store.queue_put([queued(who, chosen), queued(who, other)]) == 1
    rows = await all_rows(store)
    for table in ("metric_points", "metric_rollups", "alert_history", "delivery_queue"):
        assert rows[table], table
        assert all(chosen in row for row in rows[table]), table
        assert not any(other in row for row in rows[table]), table


async def test_consent_removed_stops_writes(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    node = who.node_ids[0]
    await consent(store, who.id)
    assert await store.write_points(points(who, node, T0, 2), {who.id: 30}) == 2
    await revoke(store, who.id)
    written = await write_everything(store, who, node, T0 + 10)
    assert set(written.values()) == {0}
    assert (await counts(store))["metric_points"] == 2  # deleting them is the opt-out's work


async def test_rows_claiming_another_accounts_node_or_endpoint_are_dropped(store: Store) -> None:
    mine = await seed_account(store, plan="pro")
    theirs = await seed_account(store, plan="pro")
    await consent(store, mine.id)
    await consent(store, theirs.id)
    foreign = theirs.node_ids[0]
    assert await store.write_points(points(mine, foreign, T0, 3), {mine.id: 30}) == 0
    assert await store.write_rollups([rollup(mine, foreign, T0)]) == 0
    assert await store.write_alerts([AlertRow.of(mine.id, foreign, event(), T0)]) == 0
    assert await store.queue_put([queued(mine, foreign)]) == 0
    stolen = dataclasses.replace(attempt(mine), endpoint_id=theirs.endpoint_ids[0])
    assert await store.write_attempts([stolen]) == 0
    assert set((await counts(store)).values()) == {0}


async def test_zero_or_missing_retention_from_the_caller_drops_points(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    node = who.node_ids[0]
    assert await store.write_points(points(who, node, T0, 3), {}) == 0
    assert await store.write_points(points(who, node, T0, 3), {who.id: 0}) == 0
    assert await store.write_points(points(who, node, T0, 3), {who.id: 30}) == 3


async def test_rows_are_stored_under_the_retention_of_the_current_plan(store: Store) -> None:
    who = await seed_account(store, plan="business")
    await consent(store, who.id)
    node = who.node_ids[0]
    assert await store.write_points(points(who, node, T0, 2), {who.id: 30}) == 2  # stale view
    assert await store.write_rollups([rollup(who, node, T0, retention_days=30)]) == 1
    async with store.engine.connect() as conn:
        for table in (metric_points, metric_rollups):
            assert set((await conn.execute(select(table.c.retention_days))).scalars()) == {90}


async def test_a_write_waits_for_a_concurrent_opt_out_and_then_writes_nothing(
    store: Store,
) -> None:
    """The opt-out (delete the consent, then the data) holds its transaction open: the write
    waits for it (PostgreSQL: FOR SHARE on the consent row; SQLite: the write lock), then
    finds no consent."""
    who = await seed_account(store, plan="pro")
    node = who.node_ids[0]
    await consent(store, who.id)
    async with store.engine.connect() as conn:
        if not is_pg(store):
            await conn.execution_options(**{WRITE: True})
        async with conn.begin():
            await conn.execute(
                delete(saved_monitoring).where(saved_monitoring.c.account_id == who.id)
            )
            write = asyncio.create_task(store.write_points(points(who, node, T0, 3), {who.id: 30}))
            await asyncio.sleep(0.5)
            assert not write.done()
            await conn.execute(delete(metric_points))
    assert await write == 0
    assert (await counts(store))["metric_points"] == 0


async def test_labels_too_long_to_store_are_dropped(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    node = who.node_ids[0]
    huge = series_labels({f"k{i}": "😀" * 128 for i in range(8)})
    ok = series_labels({f"label_{i}_".ljust(64, "x"): "<&>😀" * 32 for i in range(8)})
    batch = [Point(who.id, node, "cpu", labels, T0, 1.0) for labels in (huge, ok, "")]
    assert await store.write_points(batch, {who.id: 30}) == 2
    rollups = [Rollup(who.id, node, "cpu", lab, 60, T0, 1, 1, 1, 1, 30) for lab in (huge, ok)]
    assert await store.write_rollups(rollups) == 1


# -- points, rollups, history -----------------------------------------------------------------
async def test_points_round_trip_through_raw_history(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    node = who.node_ids[0]
    batch = points(who, node, T0, 120, ETH0) + points(who, node, T0, 120, ETH1)
    assert await store.write_points(batch, {who.id: 30}) == 240
    found = await store.history(node, "cpu", T0, T0 + 120, 10)
    assert (found.source, found.step) == ("raw", 10)
    assert [s.labels for s in found.series] == [{"interface": "eth0"}, {"interface": "eth1"}]
    expected = [(T0 + 10 * k, 10 * k + 4.5, 10.0 * k, 10.0 * k + 9) for k in range(12)]
    assert found.series[0].points == expected
    assert found.series[1].points == expected
    assert (await store.history(node, "other", T0, T0 + 120, 10)).series == []
    assert (await store.history(node, "cpu", T0 + 500, T0 + 600, 10)).series == []


async def test_rollups_merge_across_two_flushes(store: Store) -> None:
    """A bucket flushed in part (shutdown) and the rest after a restart adds up."""
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    node = who.node_ids[0]
    before, after = RollupAccumulator(), RollupAccumulator()
    for p in points(who, node, T0, 30):
        before.add(p, 30)
    for p in points(who, node, T0 + 30, 30):
        after.add(Point(p.account_id, p.node_id, p.metric, p.labels, p.ts, p.value + 100), 30)
    assert await store.write_rollups(before.drain()) == 2  # minute + hour
    assert await store.write_rollups(after.closed(T0 + 3600)) == 2
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    metric_rollups.c.resolution,
                    metric_rollups.c.min,
                    metric_rollups.c.max,
                    metric_rollups.c.sum,
                    metric_rollups.c.count,
                ).order_by(metric_rollups.c.resolution)
            )
        ).all()
    total = float(sum(range(30)) + sum(range(100, 130)))
    assert [tuple(r) for r in rows] == [(60, 0.0, 129.0, total, 60), (3600, 0.0, 129.0, total, 60)]


async def test_rollups_of_one_batch_with_the_same_key_are_merged(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    node = who.node_ids[0]
    twice = [rollup(who, node, T0), rollup(who, node, T0, min=0.5, max=9.0, sum=10.0, count=3)]
    assert await store.write_rollups(twice) == 1
    found = await store.history(node, "cpu", T0, T0 + 60, 60)
    assert found.series[0].points == [(T0, 14.0 / 5, 0.5, 9.0)]


async def test_history_picks_the_source_by_step(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    node = who.node_ids[0]
    acc = RollupAccumulator()
    batch = points(who, node, T0, 120)  # values 0..119 over two minutes
    for p in batch:
        acc.add(p, 30)
    await store.write_points(batch, {who.id: 30})
    await store.write_rollups(acc.drain())
    await store.write_points([Point(who.id, node, "cpu", "", T0 + 3600, 1000.0)], {who.id: 30})

    raw = await store.history(node, "cpu", T0, T0 + 120, 59)
    assert raw.source == "raw"
    assert raw.series[0].points == [
        (T0, 29.0, 0.0, 58.0),
        (T0 + 59, 88.0, 59.0, 117.0),
        (T0 + 118, 118.5, 118.0, 119.0),
    ]
    minute = await store.history(node, "cpu", T0, T0 + 120, 60)
    assert minute.source == "minute"
    assert minute.series[0].points == [(T0, 29.5, 0.0, 59.0), (T0 + 60, 89.5, 60.0, 119.0)]
    two = await store.history(node, "cpu", T0, T0 + 120, 120)
    assert (two.source, two.series[0].points) == ("minute", [(T0, 59.5, 0.0, 119.0)])
    hour = await store.history(node, "cpu", T0, T0 + 7200, 3600)
    assert hour.source == "hour"
    assert hour.series[0].points == [(T0, 59.5, 0.0, 119.0)]  # the lone raw point has no rollup
    for found in (raw, minute, two, hour):  # floats, never Decimal (JSON must take them)
        assert all(type(v) is float for p in found.series[0].points for v in p), found.source


async def test_history_merges_a_bucket_held_in_two_retention_classes(store: Store) -> None:
    """Between a plan change and its reclass a bucket can have a row in each class."""
    who = await seed_account(store, plan="business")
    await consent(store, who.id)
    node = who.node_ids[0]
    assert await store.write_rollups([rollup(who, node, T0, min=1.0, max=3.0, sum=4.0)]) == 1
    await store.update_account(who.id, plan="pro")
    assert await store.write_rollups([rollup(who, node, T0 + 7, min=0.0, sum=2.0, count=3)]) == 1
    found = await store.history(node, "cpu", T0, T0 + 120, 60)
    assert found.series[0].points == [(T0, 6.0 / 5, 0.0, 3.0)]
    shifted = await store.history(node, "cpu", T0 - 30, T0 + 90, 60)  # start off the minute
    assert shifted.series[0].points == [(T0 - 30, 6.0 / 5, 0.0, 3.0)]
    wide = await store.history(node, "cpu", T0, T0 + 120, 120)
    assert wide.series[0].points == [(T0, 6.0 / 5, 0.0, 3.0)]


async def test_history_refuses_empty_ranges_and_too_many_buckets(store: Store) -> None:
    node = "0" * 32
    with pytest.raises(ValueError, match="empty"):
        await store.history(node, "cpu", T0, T0, 60)
    with pytest.raises(ValueError, match="empty"):
        await store.history(node, "cpu", T0, T0 - 1, 60)
    with pytest.raises(ValueError, match="positive"):
        await store.history(node, "cpu", T0, T0 + 60, 0)
    with pytest.raises(ValueError, match="finite"):
        await store.history(node, "cpu", T0, math.inf, 60)
    with pytest.raises(ValueError, match=f"at most {MAX_BUCKETS}"):
        await store.history(node, "cpu", T0, T0 + MAX_BUCKETS + 1, 1)
    month = await store.history(node, "cpu", T0 - 31 * DAY, T0, 60)  # 44,640 buckets: allowed
    assert (month.source, month.series) == ("minute", [])


# -- alert history, attempts, queue -----------------------------------------------------------
async def test_alert_history_ignores_a_repeated_event_and_reads_newest_first(store: Store) -> None:
    who = await seed_account(store, plan="pro", nodes=2)
    a, b = who.node_ids
    await consent(store, who.id)
    rows = [AlertRow.of(who.id, a, event(n, T0 + n), T0 + DAY) for n in (1, 2, 3)]
    rows.append(AlertRow.of(who.id, b, event(1, T0 + 10), T0 + DAY))  # same id, other node
    assert await store.write_alerts(rows) == 4
    assert await store.write_alerts(rows[:2] + rows[:1]) == 0
    found = await store.alert_history([a, b], T0, T0 + 100)
    assert [(r["node_id"], r["id"]) for r in found] == [
        (b, "evt-00000001"),
        (a, "evt-00000003"),
        (a, "evt-00000002"),
        (a, "evt-00000001"),
    ]
    assert found[1]["value"] == "<5"
    assert found[2]["value"] == 93.5
    assert set(found[0]) == {
        "node_id", "id", "fingerprint", "rule", "status", "severity", "metric", "labels",
        "value", "threshold", "summary", "started_at", "ended_at", "ts",
    }  # fmt: skip
    assert found[0]["labels"] == {"cpu": "total"}
    assert len(await store.alert_history([a, b], T0, T0 + 100, limit=2)) == 2
    assert [r["id"] for r in await store.alert_history([a], T0 + 2, T0 + 2)] == ["evt-00000002"]
    assert await store.alert_history([], T0, T0 + 100) == []


async def test_attempts_are_written_and_read_newest_first(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    assert await store.write_attempts([attempt(who, n, T0 + n) for n in (1, 2, 3)]) == 3
    found = await store.attempts(who.endpoint_ids[0], limit=2)
    assert [r["attempt"] for r in found] == [3, 2]
    assert found[0]["status"] == 200
    assert found[0]["latency_ms"] == 12.5
    assert len(found[0]["id"]) == 32
    assert await store.attempts("f" * 32) == []


async def test_queue_put_delete_pending(store: Store) -> None:
    who = await seed_account(store, plan="pro", nodes=2)
    a, b = who.node_ids
    await consent(store, who.id)
    first, second, third = (
        queued(who, a, 1, T0 + 2),
        queued(who, b, 1, T0),
        queued(who, a, 2, T0 + 1),
    )
    assert await store.queue_put([first, second, third]) == 3
    assert await store.queue_put([first]) == 0
    pending = await store.queue_pending()
    assert pending == [second, third, first]
    assert await store.queue_pending(limit=1) == [second]
    assert await store.queue_delete([second.msg_id, "missing"]) == 1
    assert await store.queue_delete([second.msg_id]) == 0
    assert [q.msg_id for q in await store.queue_pending()] == [third.msg_id, first.msg_id]


# -- retention --------------------------------------------------------------------------------
async def test_purge_by_moving_now(store: Store) -> None:
    who = await seed_account(store, plan="pro")  # 30 days
    await consent(store, who.id)
    node = who.node_ids[0]
    await write_everything(store, who, node, T0)
    assert await store.write_points(points(who, node, T0 + DAY, 2), {who.id: 30}) == 2
    assert await store.write_rollups([rollup(who, node, T0 + DAY)]) == 1
    before = await counts(store)

    nothing = await store.purge(T0 + 29 * DAY)
    assert nothing == {**dict.fromkeys(nothing, 0), "delivery_queue": 1}  # its deadline passed
    assert await counts(store) == {**before, "delivery_queue": 0}

    day_end = DAY0 + DAY
    done = await store.purge(day_end + 30 * DAY)  # T0's whole day is past 30 days
    after = await counts(store)
    assert after == {
        "metric_points": 2,
        "metric_rollups": 1,
        "alert_history": 0,
        "delivery_attempts": 0,
        "delivery_queue": 0,
    }
    assert (done["alert_history"], done["delivery_attempts"], done["delivery_queue"]) == (1, 1, 0)
    if is_pg(store):
        # Whole day partitions went; no row was deleted one by one.
        assert done["partitions"] == 2
        assert (done["metric_points"], done["metric_rollups"]) == (0, 0)
        assert await pg_partitions(store, "metric_points_r30") == [
            "metric_points_r30_d20270116",
            "metric_points_r30_d20270117",  # made a day ahead
        ]
        assert "metric_rollups_r30_d20270115" not in await pg_partitions(
            store, "metric_rollups_r30"
        )
    else:
        assert (done["metric_points"], done["metric_rollups"], done["partitions"]) == (3, 1, 0)


async def test_purge_granularity_at_the_retention_boundary(store: Store) -> None:
    """SQLite deletes rows exactly at their retention; PostgreSQL drops a day partition once
    all of it is past retention, so it keeps a row at most one day longer."""
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    node = who.node_ids[0]
    await store.write_points(points(who, node, T0, 10), {who.id: 30})
    done = await store.purge(T0 + 30 * DAY + 5)
    left = (await counts(store))["metric_points"]
    if is_pg(store):
        assert (done["partitions"], left) == (0, 10)
        await store.purge(DAY0 + 31 * DAY)
        assert (await counts(store))["metric_points"] == 0
    else:
        assert (done["metric_points"], left) == (5, 5)


async def test_sqlite_purge_works_through_rowid_ranges(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitoring, "SQLITE_PURGE_ROWIDS", 3)
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    node = who.node_ids[0]
    await store.write_points(points(who, node, T0, 10), {who.id: 30})
    await store.write_points(points(who, node, T0 + 2 * DAY, 4), {who.id: 30})
    done = await store.purge(T0 + 32 * DAY)
    assert (await counts(store))["metric_points"] == 4
    if not is_pg(store):
        assert done["metric_points"] == 10


async def test_one_batch_of_two_accounts_on_two_plans(store: Store) -> None:
    pro = await seed_account(store, plan="pro")
    business = await seed_account(store, plan="business")
    for who in (pro, business):
        await consent(store, who.id)
    batch = points(pro, pro.node_ids[0], T0, 2) + points(business, business.node_ids[0], T0, 3)
    assert await store.write_points(batch, {pro.id: 30, business.id: 90}) == 5
    async with store.engine.connect() as conn:
        got = await conn.execute(
            select(metric_points.c.retention_days, func.count()).group_by(
                metric_points.c.retention_days
            )
        )
        assert sorted(tuple(r) for r in got) == [(30, 2), (90, 3)]
    if is_pg(store):
        assert await pg_partitions(store, "metric_points") == [
            "metric_points_r30",
            "metric_points_r90",
        ]
    await store.purge(DAY0 + 31 * DAY)  # the 30-day class goes, the 90-day one stays
    assert (await counts(store))["metric_points"] == 3


async def test_reclass_on_downgrade(store: Store) -> None:
    who = await seed_account(store, plan="business")  # 90 days
    await consent(store, who.id)
    node = who.node_ids[0]
    old, recent = T0 - 60 * DAY, T0 - DAY
    await store.write_points(points(who, node, old, 2) + points(who, node, recent, 3), {who.id: 90})
    await store.write_rollups([rollup(who, node, old), rollup(who, node, recent)])
    await store.write_alerts(
        [
            AlertRow.of(who.id, node, event(n, ts), ts + 90 * DAY)
            for n, ts in ((1, old), (2, recent))
        ]
    )
    await store.update_account(who.id, plan="pro")
    # Written after the plan change, before reclass: stored under 30 days already.
    assert await store.write_rollups([rollup(who, node, recent, min=0.0, sum=6.0, count=3)]) == 1

    changed = await store.reclass(who.id, 30, now=T0)
    assert changed > 0
    async with store.engine.connect() as conn:
        got = (await conn.execute(select(metric_points.c.ts, metric_points.c.retention_days))).all()
        assert sorted(got) == [(recent + i, 30) for i in range(3)]
        roll = (
            await conn.execute(
                select(
                    metric_rollups.c.bucket,
                    metric_rollups.c.retention_days,
                    metric_rollups.c.min,
                    metric_rollups.c.sum,
                    metric_rollups.c.count,
                )
            )
        ).all()
        assert [tuple(r) for r in roll] == [(recent, 30, 0.0, 10.0, 5)]  # merged
        if is_pg(store):
            homes = await conn.execute(
                text("SELECT DISTINCT tableoid::regclass::text FROM metric_points")
            )
            assert list(homes.scalars()) == ["metric_points_r30_d20270114"]
    alerts = await store.alert_history([node], 0, T0 + DAY)
    assert [a["id"] for a in alerts] == ["evt-00000002"]
    async with store.engine.connect() as conn:
        expiry = await conn.scalar(
            select(func.max(text("expires_at"))).select_from(text("alert_history"))
        )
    assert expiry == recent + 30 * DAY


async def test_reclass_to_zero_deletes_everything_of_the_account(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    other = await seed_account(store, plan="pro")
    for account in (who, other):
        await consent(store, account.id)
        await write_everything(store, account, account.node_ids[0])
    deleted = await store.reclass(who.id, 0, now=T0)
    assert deleted == 7  # 3 points, a rollup, an alert, an attempt, a queued delivery
    assert await counts(store) == {
        "metric_points": 3,
        "metric_rollups": 1,
        "alert_history": 1,
        "delivery_attempts": 1,
        "delivery_queue": 1,
    }


async def test_upgrade_reclass_extends_retention(store: Store) -> None:
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    node = who.node_ids[0]
    await store.write_points(points(who, node, T0, 2), {who.id: 30})
    await store.update_account(who.id, plan="business")
    assert await store.reclass(who.id, 90, now=T0) >= 2
    done = await store.purge(DAY0 + 60 * DAY)
    assert done["metric_points"] == 0
    assert (await counts(store))["metric_points"] == 2
    if is_pg(store):  # what went is the emptied 30-day partitions (T0's day and the next)
        assert done["partitions"] == 2
        assert await pg_partitions(store, "metric_points_r30") == []


# -- cascades ---------------------------------------------------------------------------------
async def test_reclass_stale_heals_a_plan_change_whose_reclass_never_ran(store: Store) -> None:
    """The purge job's self-healing check: accounts on a shorter plan than their rows were
    stamped for are re-classed (once); rows stamped right are left alone."""
    downgraded = await seed_account(store, plan="business")  # 90 days
    attempts_only = await seed_account(store, plan="business")
    business = await seed_account(store, plan="business")
    pro = await seed_account(store, plan="pro")  # stamped right, an agent clock a year behind
    for who in (downgraded, attempts_only, business, pro):
        await consent(store, who.id)
    node = downgraded.node_ids[0]
    old, recent = T0 - 60 * DAY, T0 - DAY
    await store.write_points(
        points(downgraded, node, old, 2) + points(downgraded, node, recent, 3), {downgraded.id: 90}
    )
    await store.write_alerts(
        [AlertRow.of(downgraded.id, node, event(1, recent), recent + 90 * DAY)]
    )
    await store.write_attempts(
        [dataclasses.replace(attempt(attempts_only, 1, recent), expires_at=recent + 90 * DAY)]
    )
    await store.write_points(points(business, business.node_ids[0], old, 2), {business.id: 90})
    await store.write_points(points(pro, pro.node_ids[0], recent, 2), {pro.id: 30})
    late = event(2, T0 - 365 * DAY)
    await store.write_alerts([AlertRow.of(pro.id, pro.node_ids[0], late, T0 + 30 * DAY)])
    await store.write_attempts([attempt(pro, 1, recent)])  # expires at + 30 days
    for who in (downgraded, attempts_only):
        await store.update_account(who.id, plan="pro")  # and no reclass ran after it

    assert await store.reclass_stale(T0) == 2
    assert await store.reclass_stale(T0) == 0  # healed
    async with store.engine.connect() as conn:
        got = await conn.execute(
            select(metric_points.c.node_id, metric_points.c.ts, metric_points.c.retention_days)
        )
        by_node: dict[str, list[tuple[float, int]]] = {}
        for row in got:
            by_node.setdefault(row.node_id, []).append((row.ts, row.retention_days))
        rows = await conn.execute(
            select(delivery_attempts.c.endpoint_id, delivery_attempts.c.expires_at)
        )
        expiry = {row.endpoint_id: row.expires_at for row in rows}
    assert sorted(by_node[node]) == [(recent + i, 30) for i in range(3)]
    assert sorted(by_node[business.node_ids[0]]) == [(old + i, 90) for i in range(2)]
    assert sorted(by_node[pro.node_ids[0]]) == [(recent + i, 30) for i in range(2)]
    alerts = await store.alert_history([node], 0, T0 + DAY)
    assert [a["id"] for a in alerts] == ["evt-00000001"]
    assert expiry[attempts_only.endpoint_ids[0]] == recent + 30 * DAY
    assert expiry[pro.endpoint_ids[0]] == recent + 30 * DAY
    assert len(await store.alert_history([pro.node_ids[0]], 0, T0 + DAY)) == 1  # untouched


async def test_deleting_a_node_or_the_account_removes_its_monitored_rows(store: Store) -> None:
    who = await seed_account(store, plan="pro", nodes=2)
    gone, kept = who.node_ids
    await consent(store, who.id)
    for node in (gone, kept):
        await write_everything(store, who, node, T0 + (0 if node == gone else 1))
    assert await store.delete_node(who.id, gone)
    rows = await all_rows(store)
    for table in ("metric_points", "metric_rollups", "alert_history", "delivery_queue"):
        assert rows[table], table
        assert not any(gone in row for row in rows[table]), table
    async with store.engine.begin() as conn:
        await conn.execute(delete(accounts).where(accounts.c.id == who.id))
    assert set((await counts(store)).values()) == {0}


# -- partitions (PostgreSQL) ------------------------------------------------------------------
async def test_partitions_are_made_once_under_concurrency(db_url: str) -> None:
    stores = [await Store.open(db_url) for _ in range(3)]
    try:
        if not is_pg(stores[0]):
            pytest.skip("partitions are PostgreSQL's")
        who = await seed_account(stores[0], plan="pro")
        await consent(stores[0], who.id)
        node = who.node_ids[0]
        day = T0 + 5 * DAY
        results = await asyncio.gather(
            *(
                s.write_points(points(who, node, day + i, 2), {who.id: 30})
                for i, s in enumerate(stores)
            )
        )
        assert results == [2, 2, 2]
        assert await pg_partitions(stores[0], "metric_points_r30") == [
            "metric_points_r30_d20270120",
            "metric_points_r30_d20270121",
        ]
        assert await pg_partitions(stores[0], "metric_points") == ["metric_points_r30"]
    finally:
        for s in stores:
            await s.close()


async def test_a_partition_dropped_by_another_process_is_made_again(db_url: str) -> None:
    writer, purger = await Store.open(db_url), await Store.open(db_url)
    try:
        if not is_pg(writer):
            pytest.skip("partitions are PostgreSQL's")
        who = await seed_account(writer, plan="pro")
        await consent(writer, who.id)
        node = who.node_ids[0]
        assert await writer.write_points(points(who, node, T0, 1), {who.id: 30}) == 1
        assert await writer.write_rollups([rollup(who, node, T0)]) == 1
        assert (await purger.purge(DAY0 + 40 * DAY))["partitions"] >= 2
        # The writer's cache still lists T0's day: the COPY / upsert finds it gone, retries.
        assert await writer.write_points(points(who, node, T0, 1), {who.id: 30}) == 1
        assert await writer.write_rollups([rollup(who, node, T0)]) == 1
        assert "metric_points_r30_d20270115" in await pg_partitions(writer, "metric_points_r30")
    finally:
        await writer.close()
        await purger.close()


async def test_ensure_refuses_absurd_ranges_and_is_a_no_op_on_sqlite(store: Store) -> None:
    cache = partitions.Partitions()
    async with store.engine.begin() as conn:
        if not is_pg(store):
            assert await cache.ensure(conn, "metric_points", 30, 0, 1e12) == 0
            assert await cache.drop_expired(conn, T0) == 0
            return
        with pytest.raises(ValueError, match="at most"):
            await cache.ensure(conn, "metric_points", 30, T0, T0 + 500 * DAY)
        with pytest.raises(ValueError, match="not partitioned"):
            await cache.ensure(conn, "nodes", 30, T0, T0)
        assert await cache.ensure(conn, "metric_rollups", 7, T0, T0 + DAY) == 3
        assert await cache.ensure(conn, "metric_rollups", 7, T0, T0 + DAY) == 0
    assert partitions.parse_name("metric_rollups_r7_d20270115") == ("metric_rollups", 7, 20833)
    assert partitions.parse_name("metric_rollups_r7") == ("metric_rollups", 7, None)
    assert partitions.parse_name("metric_rollups_test7") is None


async def test_schema_comparison_with_partitions_needs_the_include_object_filter(
    store: Store,
) -> None:
    """Run-time partitions are tables the MetaData does not know: alembic's compare_metadata
    reports them unless ``partitions.include_object`` leaves them out."""
    who = await seed_account(store, plan="pro")
    await consent(store, who.id)
    await store.write_points(points(who, who.node_ids[0], T0, 1), {who.id: 30})
    await store.write_rollups([rollup(who, who.node_ids[0], T0)])

    def diff(sync: Connection, /, **opts: Any) -> list[Any]:
        context = MigrationContext.configure(sync, opts={"compare_type": True, **opts})
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        plain = await conn.run_sync(diff)
        filtered = await conn.run_sync(lambda s: diff(s, include_object=partitions.include_object))
    assert filtered == []
    if is_pg(store):
        removed = {d[1].name for d in plain if d[0] == "remove_table"}
        assert "metric_points_r30_d20270115" in removed
        assert "metric_rollups_r30" in removed
    else:
        assert plain == []


async def test_writes_are_idempotent_for_updates_of_the_consent_nodes(store: Store) -> None:
    """Narrowing the consent on the fly changes what the next write keeps."""
    who = await seed_account(store, plan="pro", nodes=2)
    a, b = who.node_ids
    await consent(store, who.id, nodes=[a, b])
    assert (
        await store.write_points(points(who, a, T0, 1) + points(who, b, T0, 1), {who.id: 30}) == 2
    )
    async with store.engine.begin() as conn:
        await conn.execute(
            update(saved_monitoring)
            .where(saved_monitoring.c.account_id == who.id)
            .values(nodes=[b])
        )
    assert (
        await store.write_points(points(who, a, T0, 1) + points(who, b, T0, 1), {who.id: 30}) == 1
    )


def test_history_arrays_out_of_order_or_doubled_are_sorted_and_merged() -> None:
    """PostgreSQL's per-series arrays: in order and one per bucket they are zipped; out of
    order (a plan that dropped the subquery's order) or with a bucket in two retention
    classes they are sorted and merged as rows would be."""
    from server.storage.series import _from_arrays

    ordered = _from_arrays("", [[60.0, 120.0], [1.0, 3.0], [0.5, 3.0], [2.0, 3.0], [1, 1]], True)
    assert ordered.points == [(60.0, 1.0, 0.5, 2.0), (120.0, 3.0, 3.0, 3.0)]
    columns: list[list[Any]] = [
        [120.0, 60.0, 60.0],
        [3.0, 1.0, 2.0],
        [3.0, 1.0, 0.5],
        [3.0, 1.0, 4.0],
        [1, 1, 3],
    ]
    merged = _from_arrays('{"if":"tun0"}', columns, True)
    assert merged.labels == {"if": "tun0"}
    assert merged.points == [(60.0, (1.0 * 1 + 2.0 * 3) / 4, 0.5, 4.0), (120.0, 3.0, 3.0, 3.0)]
    grouped = _from_arrays("", [[120.0, 60.0], [3.0, 1.0], [3.0, 1.0], [3.0, 1.0]], False)
    assert grouped.points == [(60.0, 1.0, 1.0, 1.0), (120.0, 3.0, 3.0, 3.0)]
