"""Webhook deliveries (the outbox), pull requests and commit statuses.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("webhook_deliveries",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("request_uuid", sa.String(length=64), nullable=False),
    sa.Column("hook_uuid", sa.String(length=64), nullable=True),
    sa.Column("event_key", sa.String(length=64), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("headers", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
    sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
    sa.Column("repository_uuid", sa.String(length=38), nullable=True),
    sa.Column("repository_full_name", sa.String(length=512), nullable=True),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("processing_ms", sa.Integer(), nullable=True),
    sa.Column("tries", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    sa.UniqueConstraint("request_uuid", name=op.f("uq_webhook_deliveries_request_uuid"))
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_event_key"), ["event_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_repository_uuid"), ["repository_uuid"], unique=False)
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_status_received_at"), ["status", "received_at"], unique=False)

    op.create_table("commit_statuses",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("repository_id", sa.Integer(), nullable=False),
    sa.Column("commit_hash", sa.String(length=40), nullable=False),
    sa.Column("key", sa.String(length=255), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("name", sa.Text(), nullable=True),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("refname", sa.String(length=255), nullable=True),
    sa.Column("url", sa.Text(), nullable=True),
    sa.Column("created_on", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_on", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"], name=op.f("fk_commit_statuses_repository_id_repositories"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_commit_statuses")),
    sa.UniqueConstraint("repository_id", "commit_hash", "key", name=op.f("uq_commit_statuses_repository_id_commit_hash_key"))
    )
    op.create_table("pull_requests",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("repository_id", sa.Integer(), nullable=False),
    sa.Column("number", sa.Integer(), nullable=False),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("author_account_id", sa.String(length=128), nullable=True),
    sa.Column("author_display_name", sa.String(length=255), nullable=True),
    sa.Column("source_branch", sa.String(length=255), nullable=True),
    sa.Column("destination_branch", sa.String(length=255), nullable=True),
    sa.Column("source_commit", sa.String(length=40), nullable=True),
    sa.Column("destination_commit", sa.String(length=40), nullable=True),
    sa.Column("merge_commit", sa.String(length=40), nullable=True),
    sa.Column("comment_count", sa.Integer(), nullable=True),
    sa.Column("task_count", sa.Integer(), nullable=True),
    sa.Column("reviewers", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True),
    sa.Column("created_on", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_on", sa.DateTime(timezone=True), nullable=True),
    sa.Column("closed_on", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"], name=op.f("fk_pull_requests_repository_id_repositories"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_pull_requests")),
    sa.UniqueConstraint("repository_id", "number", name=op.f("uq_pull_requests_repository_id_number"))
    )
    with op.batch_alter_table("pull_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pull_requests_state"), ["state"], unique=False)



def downgrade() -> None:
    with op.batch_alter_table("pull_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pull_requests_state"))

    op.drop_table("pull_requests")
    op.drop_table("commit_statuses")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_status_received_at"))
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_repository_uuid"))
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_event_key"))

    op.drop_table("webhook_deliveries")
