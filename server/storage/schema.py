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

from sqlalchemy import Column, Double, ForeignKey, Index, MetaData, String, Table

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

ACCOUNT_TABLES = (accounts, api_keys, sessions, nodes)
"""Every table holding an account's data (issue 5's export and deletion walk these)."""
