"""Reading a saved series into step buckets: the SQL behind ``MonitoringStore.history``.

    history = await read_history(conn, node_id, metric, start, end, step)

The source is raw points for a step below 60 s, minute rollups below 3600 s and hour rollups
otherwise. Bucket k covers ``[start + k * step, start + (k + 1) * step)``; a rollup counts in
the bucket its own start falls in; empty buckets are left out. Buckets are aggregated in SQL
(``floor((time - start) / step)``), reading the indexes (node_id, metric, ts) and (node_id,
metric, resolution, labels, bucket, …) — except when the step is the rollups' resolution:
each (aligned) rollup is then its own bucket, so the rollups are read as they are, in index
order, with no grouping and no sort; the bucket's start is computed here, and the rare bucket
held in two retention classes (between a plan change and its reclass) is merged here. On
PostgreSQL the rows are read through asyncpg itself, as one row per series with an array per
column: SQLAlchemy's row handling about doubles the time of a 43,200-bucket month, and arrays
take a third off asyncpg's rows (SQLite's are read through aiosqlite, as rows).
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Final

import asyncpg
from sqlalchemy import Double, Integer, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from server.errors import Unavailable
from server.storage.monitored import History, SeriesHistory, Source, parse_labels
from server.storage.schema import metric_points, metric_rollups

MAX_BUCKETS: Final = 44_640
"""Most buckets per series one query returns: a 31-day month at one-minute steps."""


def check_range(start: float, end: float, step: float) -> None:
    """ValueError (with a message for the API) unless the range and step can be answered."""
    if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(step)):
        raise ValueError("from, to and step must be finite numbers")
    if end <= start:
        raise ValueError("the range is empty: from must be before to")
    if step <= 0:
        raise ValueError("step must be positive")
    buckets = math.ceil((end - start) / step)
    if buckets > MAX_BUCKETS:
        raise ValueError(
            f"{buckets} buckets of {step:g} s in the range; at most {MAX_BUCKETS} per "
            f"series: use a step of at least {math.ceil((end - start) / MAX_BUCKETS)} s"
        )


def source_of(step: float) -> Source:
    return "raw" if step < 60 else "minute" if step < 3600 else "hour"


async def read_history(
    conn: AsyncConnection, node_id: str, metric: str, start: float, end: float, step: float
) -> History:
    check_range(start, end, step)
    source = source_of(step)
    pg = conn.dialect.name == "postgresql"
    query, one_by_one = history_query(node_id, metric, start, end, step, source, pg=pg)
    if pg:
        found = await _fetch(conn, _as_arrays(query))
        return History(source, step, [_from_arrays(row[0], row[1:], one_by_one) for row in found])
    rows = await _fetch(conn, query)
    series: list[SeriesHistory] = []
    for labels, group in itertools.groupby(rows, key=itemgetter(0)):
        part = list(group)
        points: list[Any] = [r[1:5] for r in part]  # tuples (start, avg, min, max)
        if one_by_one and len({p[0] for p in points}) < len(points):
            points = _merged(part)  # a bucket in two retention classes: rare
        series.append(SeriesHistory(parse_labels(labels), points))
    return History(source, step, series)


def history_query(
    node_id: str,
    metric: str,
    start: float,
    end: float,
    step: float,
    source: Source,
    *,
    pg: bool,
) -> tuple[Select[Any], bool]:
    """Rows (labels, bucket start, avg, min, max, …) ordered by labels and time, and True if
    they are the rollups one by one (with a sixth column, the rollup's count), not grouped.
    Every number is double precision (an integer divisor would make PostgreSQL's numeric,
    decoded as Decimal)."""
    if source == "raw":
        t = metric_points
        time_col = t.c.ts
        filters = [t.c.node_id == node_id, t.c.metric == metric]
        parts = [t.c.value.label("s"), _double(1).label("n")]
        parts += [t.c.value.label("lo"), t.c.value.label("hi")]
        resolution = None
    else:
        t = metric_rollups
        time_col = t.c.bucket
        resolution = 60 if source == "minute" else 3600
        filters = [t.c.node_id == node_id, t.c.metric == metric, t.c.resolution == resolution]
        parts = [t.c.sum.label("s"), cast(t.c.count, Double).label("n"), t.c.min.label("lo")]
        parts += [t.c.max.label("hi")]
    where = [*filters, time_col >= _double(start), time_col < _double(end)]
    if step == resolution:  # one rollup per bucket: read in index order, not grouped
        number = _bucket_number(time_col, start, step, pg=pg)
        rollups = (
            select(
                t.c.labels,
                cast(_double(start) + number * _double(step), Double),
                t.c.sum / cast(t.c.count, Double),
                t.c.min,
                t.c.max,
                t.c.count,
            )
            .where(*where)
            .order_by(t.c.labels, time_col)
        )
        return rollups, True
    # A subquery: the bucket number's expression (with bound values) is grouped by name.
    inner = (
        select(t.c.labels, _bucket_number(time_col, start, step, pg=pg).label("k"), *parts)
        .where(*where)
        .subquery()
    )
    grouped = (
        select(
            inner.c.labels,
            cast(_double(start) + inner.c.k * _double(step), Double),
            func.sum(inner.c.s) / func.sum(inner.c.n),
            func.min(inner.c.lo),
            func.max(inner.c.hi),
        )
        .group_by(inner.c.labels, inner.c.k)
        .order_by(inner.c.labels, inner.c.k)
    )
    return grouped, False


def _as_arrays(query: Select[Any]) -> Select[Any]:
    """PostgreSQL: one row per series — its labels and one array per column, in the query's
    order (``array_agg`` over a sorted subquery keeps its order; checked on arrival, see
    :func:`_from_arrays`). asyncpg decodes an array in one C loop: a 43,200-bucket month
    comes in about a third faster than as rows."""
    inner = query.subquery()
    labels, *values = inner.c
    return select(labels, *(func.array_agg(c) for c in values)).group_by(labels).order_by(labels)


def _from_arrays(labels: str, columns: Sequence[list[Any]], one_by_one: bool) -> SeriesHistory:
    """One series from :func:`_as_arrays`' columns (bucket starts, avgs, mins, maxes[,
    counts])."""
    starts = columns[0]
    ordered = starts == sorted(starts)
    if ordered and not (one_by_one and len(set(starts)) < len(starts)):
        return SeriesHistory(parse_labels(labels), list(zip(*columns[:4], strict=True)))
    # Out of order (a plan that did not keep the subquery's order) or a bucket held in two
    # retention classes: rows again, sorted by bucket start (stable), merged.
    rows = sorted(zip(itertools.repeat(labels), *columns, strict=False), key=itemgetter(1))
    points = _merged(rows) if one_by_one else [r[1:5] for r in rows]
    return SeriesHistory(parse_labels(labels), points)


def _double(value: float) -> Any:
    return literal(float(value), Double)


def _merged(rows: Sequence[Sequence[Any]]) -> list[tuple[float, float, float, float]]:
    """Rows (labels, bucket start, avg, min, max, count) of one series as points, the rows of
    one bucket merged."""
    points: list[tuple[float, float, float, float]] = []
    total = count = 0.0
    for _, ts, avg, lo, hi, n in rows:
        if points and points[-1][0] == ts:
            total, count = total + avg * n, count + n
            _ts, _avg, p_lo, p_hi = points[-1]
            points[-1] = (ts, total / count, min(p_lo, lo), max(p_hi, hi))
        else:
            total, count = avg * n, n
            points.append((ts, avg, lo, hi))
    return points


def _bucket_number(column: ColumnElement[float], start: float, step: float, *, pg: bool) -> Any:
    ratio = (column - _double(start)) / _double(step)  # >= 0: truncation (SQLite) is floor
    return cast(func.floor(ratio), Double) if pg else cast(ratio, Integer)


async def _fetch(conn: AsyncConnection, query: Select[Any]) -> Sequence[Sequence[Any]]:
    """All rows of ``query``, through the driver itself (PostgreSQL: one statement, which
    needs no transaction of its own; SQLite: in ``conn``'s transaction)."""
    compiled = query.compile(dialect=conn.dialect)
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    try:
        if conn.dialect.name == "postgresql":
            rows: list[Any] = await raw.fetch(str(compiled), *params)
            return rows
        async with raw.execute(str(compiled), params) as cursor:
            found: list[Any] = list(await cursor.fetchall())
            return found
    except (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError) as exc:
        raise Unavailable("storage is not reachable") from exc
    except sqlite3.OperationalError as exc:
        raise Unavailable("storage is not reachable") from exc
