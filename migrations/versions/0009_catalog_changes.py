"""The catalog change log behind `GET /catalog/changes`.

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0009"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["catalog_entities.id"],
            name=op.f("fk_catalog_changes_entity_id_catalog_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_changes")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("catalog_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_catalog_changes_changed_at"), ["changed_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_catalog_changes_entity_id"), ["entity_id"], unique=False
        )
    # Entities stored before the change log get a number each, so a feed reader's cursor
    # moves past them (a cursor of 0 would otherwise always mean "start again").
    op.execute(
        "INSERT INTO catalog_changes (entity_id, changed_at) "
        "SELECT id, updated_at FROM catalog_entities ORDER BY id"
    )


def downgrade() -> None:
    with op.batch_alter_table("catalog_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalog_changes_entity_id"))
        batch_op.drop_index(batch_op.f("ix_catalog_changes_changed_at"))

    op.drop_table("catalog_changes")
