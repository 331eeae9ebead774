"""Run liveness: a heartbeat and the task on each sync run; tasks parked after killing
their worker twice.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("task_id", sa.String(length=255), nullable=True))
    op.create_table(
        "parked_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("args", JSON, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parked_tasks")),
        sa.UniqueConstraint("task_id", name=op.f("uq_parked_tasks_task_id")),
    )
    with op.batch_alter_table("parked_tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_parked_tasks_task_name"), ["task_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("parked_tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_parked_tasks_task_name"))
    op.drop_table("parked_tasks")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_column("task_id")
        batch_op.drop_column("heartbeat_at")
