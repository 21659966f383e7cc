"""Saved monitoring (issue 5): the consent, the opt-in monitored data, legal holds, deletion.

On PostgreSQL ``metric_points`` and ``metric_rollups`` are partitioned by ``retention_days``
(LIST) and, below that, by day (RANGE); the partitions are made at run time by
``server.storage.partitions``, ahead of the data, and dropped whole by the retention purge.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=f"fk_{table}_{column}_{target}",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "saved_monitoring",
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("consented_at", sa.Double(), nullable=False),
        sa.Column("consented_by", sa.String(100), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        _fk("saved_monitoring", "account_id", "accounts"),
        sa.PrimaryKeyConstraint("account_id", name="pk_saved_monitoring"),
    )
    op.create_table(
        "metric_points",
        sa.Column("node_id", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("labels", sa.String(1700), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("retention_days", sa.SmallInteger(), nullable=False),
        _fk("metric_points", "node_id", "nodes"),
        postgresql_partition_by="LIST (retention_days)",
    )
    op.create_index("ix_metric_points_node_id", "metric_points", ["node_id", "metric", "ts"])
    op.create_table(
        "metric_rollups",
        sa.Column("node_id", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("labels", sa.String(1700), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.Double(), nullable=False),
        sa.Column("min", sa.Double(), nullable=False),
        sa.Column("max", sa.Double(), nullable=False),
        sa.Column("sum", sa.Double(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("retention_days", sa.SmallInteger(), nullable=False),
        _fk("metric_rollups", "node_id", "nodes"),
        postgresql_partition_by="LIST (retention_days)",
    )
    op.create_index(
        "ix_metric_rollups_node_id",
        "metric_rollups",
        ["node_id", "metric", "resolution", "labels", "bucket", "retention_days"],
        unique=True,
    )
    op.create_table(
        "alert_history",
        sa.Column("node_id", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("summary", sa.String(1024), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        _fk("alert_history", "node_id", "nodes"),
    )
    op.create_index("ix_alert_history_node_id", "alert_history", ["node_id", "ts"])
    op.create_index(
        "uq_alert_history_node_id", "alert_history", ["node_id", "event_id"], unique=True
    )
    op.create_index("ix_alert_history_expires_at", "alert_history", ["expires_at"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("endpoint_id", sa.String(32), nullable=False),
        sa.Column("msg_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        _fk("delivery_attempts", "endpoint_id", "webhook_endpoints"),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_attempts"),
    )
    op.create_index("ix_delivery_attempts_endpoint_id", "delivery_attempts", ["endpoint_id"])
    op.create_index("ix_delivery_attempts_expires_at", "delivery_attempts", ["expires_at"])
    op.create_table(
        "delivery_queue",
        sa.Column("msg_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.String(32), nullable=False),
        sa.Column("node_id", sa.String(32), nullable=False),
        sa.Column("notice", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        _fk("delivery_queue", "endpoint_id", "webhook_endpoints"),
        _fk("delivery_queue", "node_id", "nodes"),
        sa.PrimaryKeyConstraint("msg_id", name="pk_delivery_queue"),
    )
    op.create_index("ix_delivery_queue_endpoint_id", "delivery_queue", ["endpoint_id"])
    op.create_index("ix_delivery_queue_expires_at", "delivery_queue", ["expires_at"])
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("ends_at", sa.Double(), nullable=True),
        sa.Column("released_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_legal_holds"),
    )
    op.create_index("ix_legal_holds_account_id", "legal_holds", ["account_id"])
    op.create_table(
        "held_data",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("hold_id", sa.String(32), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        _fk("held_data", "hold_id", "legal_holds"),
        sa.PrimaryKeyConstraint("id", name="pk_held_data"),
    )
    op.create_index("ix_held_data_hold_id", "held_data", ["hold_id"])
    op.create_table(
        "deletion_requests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(32), nullable=False),
        sa.Column("status_hash", sa.String(64), nullable=False),
        sa.Column("requested_at", sa.Double(), nullable=False),
        sa.Column("completed_at", sa.Double(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deletion_requests"),
        sa.UniqueConstraint("status_hash", name="uq_deletion_requests_status_hash"),
    )
    op.create_index("ix_deletion_requests_account_id", "deletion_requests", ["account_id"])


def downgrade() -> None:
    for table in (
        "deletion_requests",
        "held_data",
        "legal_holds",
        "delivery_queue",
        "delivery_attempts",
        "alert_history",
        "metric_rollups",
        "metric_points",
        "saved_monitoring",
    ):
        op.drop_table(table)
