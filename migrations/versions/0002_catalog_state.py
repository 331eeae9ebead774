"""Catalog state: what each repository's catalog files were last read at, descriptor
content and conflicts, and the workspace of each entity.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("catalog_checked_on", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("catalog_checked_head", sa.String(length=40), nullable=True))
    with op.batch_alter_table("catalog_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("entity_conflicts", JSON, nullable=True))
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workspace", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_catalog_entities_workspace"), ["workspace"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalog_entities_workspace"))
        batch_op.drop_column("workspace")
    with op.batch_alter_table("catalog_files", schema=None) as batch_op:
        batch_op.drop_column("entity_conflicts")
        batch_op.drop_column("content")
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_column("catalog_checked_head")
        batch_op.drop_column("catalog_checked_on")
