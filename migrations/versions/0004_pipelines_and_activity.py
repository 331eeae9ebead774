"""Pipelines, and what incremental reconciliation of repository activity needs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("pipelines",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("uuid", sa.String(length=38), nullable=False),
    sa.Column("repository_id", sa.Integer(), nullable=False),
    sa.Column("build_number", sa.Integer(), nullable=True),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("result", sa.String(length=16), nullable=True),
    sa.Column("trigger", sa.String(length=32), nullable=True),
    sa.Column("ref_type", sa.String(length=32), nullable=True),
    sa.Column("ref_name", sa.String(length=255), nullable=True),
    sa.Column("commit_hash", sa.String(length=40), nullable=True),
    sa.Column("duration_seconds", sa.Integer(), nullable=True),
    sa.Column("created_on", sa.DateTime(timezone=True), nullable=True),
    sa.Column("completed_on", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"], name=op.f("fk_pipelines_repository_id_repositories"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
    sa.UniqueConstraint("uuid", name=op.f("uq_pipelines_uuid"))
    )
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pipelines_repository_id_created_on"), ["repository_id", "created_on"], unique=False)

    with op.batch_alter_table("commit_statuses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_commit_statuses_repository_id_updated_on"), ["repository_id", "updated_on"], unique=False)

    with op.batch_alter_table("pull_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pull_requests_repository_id_state"), ["repository_id", "state"], unique=False)

    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_push_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("pull_requests_cursor", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("activity_reconciled_at", sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_column("activity_reconciled_at")
        batch_op.drop_column("pull_requests_cursor")
        batch_op.drop_column("last_push_at")

    with op.batch_alter_table("pull_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pull_requests_repository_id_state"))

    with op.batch_alter_table("commit_statuses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commit_statuses_repository_id_updated_on"))

    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipelines_repository_id_created_on"))

    op.drop_table("pipelines")
