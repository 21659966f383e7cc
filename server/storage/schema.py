"""The tables, as SQLAlchemy Core on one MetaData — the shape migrations must produce.

A test compares this MetaData with a freshly migrated database on SQLite and PostgreSQL, so a
change here without a migration (or the reverse) fails.

Conventions: ids are random 32-character hex strings; times are UTC seconds since the epoch
(double precision); e-mail addresses are stored lower-cased, so the unique constraint is
case-insensitive; secrets (API keys, node tokens, session ids) are stored only as SHA-256 hex
digests plus a short display prefix; every row that belongs to an account references it with
ON DELETE CASCADE, so deleting the account (issue 5) removes everything of it.

No monitored data in any of these tables: no metrics, no last-seen times, no alert history.
``nodes.enrolled_at`` is enrolment state (the node has connected at least once), set once.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Double, ForeignKey, Index, MetaData, String, Table

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

ACCOUNT_TABLES = (accounts, api_keys, sessions, nodes, webhook_endpoints)
"""Every table holding an account's data (issue 5's export and deletion walk these)."""
