"""The tables, as SQLAlchemy Core on one MetaData — the shape migrations must produce.

A test compares this MetaData with a freshly migrated database on SQLite and PostgreSQL, so a
change here without a migration (or the reverse) fails.

Conventions: ids are random 32-character hex strings; times are UTC seconds since the epoch
(double precision); e-mail addresses are stored lower-cased, so the unique constraint is
case-insensitive; secrets (API keys, node tokens, session ids) are stored only as SHA-256 hex
digests plus a short display prefix; every row that belongs to an account references it with
ON DELETE CASCADE, so deleting the account (issue 5) removes everything of it.

Account tables (``ACCOUNT_TABLES``) hold no monitored data: no metrics, no last-seen times, no
alert history. ``nodes.enrolled_at`` is enrolment state (the node has connected at least once),
set once. Monitored data lives only in ``MONITORED_TABLES``, and a row exists there only for an
account that opted in to saved monitoring (``saved_monitoring``), for the nodes it chose, for
its plan's retention (issue 5). Operator records — legal holds, the data a hold keeps after
deletion, deletion requests — are in ``OPERATOR_TABLES``; they reference an account by id only
(no foreign key), because they outlive it.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Named constraints, so later migrations (and SQLite batch mode) can address them."""

metadata = MetaData(naming_convention=NAMING)

ID = 32
DIGEST = 64

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(254), nullable=False, unique=True),
    Column("company", String(200), nullable=True),
    Column("password_hash", String(200), nullable=False),
    Column("plan", String(32), nullable=False),
    Column("created_at", Double, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column(
        "account_id",
        String(ID),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("name", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(DIGEST), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id_hash", String(DIGEST), primary_key=True),
    Column(
        "account_id",
        String(ID),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False, index=True),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column(
        "account_id",
        String(ID),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("name", String(64), nullable=False),
    Column("token_prefix", String(16), nullable=False),
    Column("token_hash", String(DIGEST), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
    Column("enrolled_at", Double, nullable=True),
)
Index("ix_nodes_enrolled_at", nodes.c.enrolled_at)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column(
        "account_id",
        String(ID),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("name", String(64), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("format", String(16), nullable=False),
    Column("enabled", Boolean(), nullable=False),
    Column("disabled_reason", String(200), nullable=True),
    Column("filters", JSON, nullable=False),
    Column("routing_key", String(64), nullable=True),
    Column("secret", String(100), nullable=False),
    Column("previous_secret", String(100), nullable=True),
    Column("previous_secret_until", Double, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)
"""Where an account's alerts go. ``filters`` is ``{"severities": [...], "nodes": [...],
"rules": [...]}`` (an empty list matches all). During a secret rotation both secrets sign
until ``previous_secret_until``."""

saved_monitoring = Table(
    "saved_monitoring",
    metadata,
    Column(
        "account_id",
        String(ID),
        ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("consented_at", Double, nullable=False),
    Column("consented_by", String(100), nullable=False),
    Column("nodes", JSON, nullable=True),
    Column("updated_at", Double, nullable=False),
)
"""The consent to saved monitoring: one row while it is on. ``consented_by`` names the API key
(``api_key:<id>``) or dashboard session (``session:<digest prefix>``) that gave it; ``nodes`` is
the list of node ids it covers, or null for every node of the account."""

ACCOUNT_TABLES = (accounts, api_keys, sessions, nodes, webhook_endpoints, saved_monitoring)
"""Every table holding an account's own data (export and deletion walk these)."""

# -- monitored data: opt-in only ------------------------------------------------------------
RETENTION = "retention_days"
"""Each monitored row carries its plan's retention when written; on PostgreSQL the big tables
are partitioned by it and then by day, so the purge drops whole partitions (see partitions.py)."""


def _node_column() -> Column[str]:
    return Column("node_id", String(ID), ForeignKey("nodes.id", ondelete="CASCADE"), nullable=False)


metric_points = Table(
    "metric_points",
    metadata,
    _node_column(),
    Column("metric", String(64), nullable=False),
    Column("labels", String(1700), nullable=False),
    Column("ts", Double, nullable=False),
    Column("value", Double, nullable=False),
    Column(RETENTION, SmallInteger, nullable=False),
    postgresql_partition_by=f"LIST ({RETENTION})",
)
"""Raw samples. ``labels`` is canonical JSON of the series labels (sorted keys, "" for none);
a coarsened value ("<5") is stored as its bound minus one half (4.5), marked nowhere else."""
Index(
    "ix_metric_points_node_id", metric_points.c.node_id, metric_points.c.metric, metric_points.c.ts
)

metric_rollups = Table(
    "metric_rollups",
    metadata,
    _node_column(),
    Column("metric", String(64), nullable=False),
    Column("labels", String(1700), nullable=False),
    Column("resolution", Integer, nullable=False),
    Column("bucket", Double, nullable=False),
    Column("min", Double, nullable=False),
    Column("max", Double, nullable=False),
    Column("sum", Double, nullable=False),
    Column("count", Integer, nullable=False),
    Column(RETENTION, SmallInteger, nullable=False),
    postgresql_partition_by=f"LIST ({RETENTION})",
)
"""Per-minute (resolution 60) and per-hour (3600) min/max/sum/count of each series."""
Index(
    "ix_metric_rollups_node_id",
    metric_rollups.c.node_id,
    metric_rollups.c.metric,
    metric_rollups.c.resolution,
    metric_rollups.c.labels,
    metric_rollups.c.bucket,
    metric_rollups.c.retention_days,
    unique=True,
)

alert_history = Table(
    "alert_history",
    metadata,
    _node_column(),
    Column("event_id", String(64), nullable=False),
    Column("fingerprint", String(16), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("metric", String(64), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("value", JSON, nullable=True),
    Column("threshold", Double, nullable=True),
    Column("summary", String(1024), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("ended_at", Double, nullable=True),
    Column("ts", Double, nullable=False),
    Column("expires_at", Double, nullable=False, index=True),
)
Index("ix_alert_history_node_id", alert_history.c.node_id, alert_history.c.ts)
Index("uq_alert_history_node_id", alert_history.c.node_id, alert_history.c.event_id, unique=True)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column(
        "endpoint_id",
        String(ID),
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("msg_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", Double, nullable=False),
    Column("status", Integer, nullable=True),
    Column("latency_ms", Double, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", String(200), nullable=False),
    Column("expires_at", Double, nullable=False, index=True),
)
"""Webhook attempts: status, latency, outcome and our own short detail — never a body."""

delivery_queue = Table(
    "delivery_queue",
    metadata,
    Column("msg_id", String(64), primary_key=True),
    Column(
        "endpoint_id",
        String(ID),
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    _node_column(),
    Column("notice", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False, index=True),
)
"""Pending deliveries of opted-in accounts, so they survive a server restart."""

MONITORED_TABLES = (metric_points, metric_rollups, alert_history, delivery_attempts, delivery_queue)
"""Monitored data: rows only with saved monitoring on (a test scans these after every run)."""

# -- operator records ------------------------------------------------------------------------
legal_holds = Table(
    "legal_holds",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("account_id", String(ID), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("categories", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("ends_at", Double, nullable=True),
    Column("released_at", Double, nullable=True),
)
"""A legal hold on an account's data (operator command only). Active while not released and
``ends_at`` is null or in the future."""

held_data = Table(
    "held_data",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column(
        "hold_id",
        String(ID),
        ForeignKey("legal_holds.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("category", String(32), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
)
"""What a hold kept when its account was deleted: one JSON snapshot per category."""

deletion_requests = Table(
    "deletion_requests",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("account_id", String(ID), nullable=False, index=True),
    Column("status_hash", String(DIGEST), nullable=False, unique=True),
    Column("requested_at", Double, nullable=False),
    Column("completed_at", Double, nullable=True),
    Column("state", String(16), nullable=False),
)
"""A deletion request's status (``held`` while a hold keeps data, then ``completed``); read
with the status token given once in the 202."""

OPERATOR_TABLES = (legal_holds, held_data, deletion_requests)
