"""Repositories remember a webhook-driven catalog refresh that failed its last attempt.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("catalog_refresh_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("catalog_refresh_failed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_column("catalog_refresh_failed_at")
        batch_op.drop_column("catalog_refresh_error")
