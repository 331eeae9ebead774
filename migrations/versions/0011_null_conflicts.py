"""Catalog files without conflicts hold SQL NULL, not JSON `null` (the errors filter relied on it).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE catalog_files SET entity_conflicts = NULL "
        "WHERE entity_conflicts IS NOT NULL AND CAST(entity_conflicts AS TEXT) = 'null'"
    )


def downgrade() -> None:
    pass  # SQL NULL reads back as None, as JSON null did
