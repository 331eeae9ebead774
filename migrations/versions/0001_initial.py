"""Initial schema: workspaces, projects, repositories, catalog files and entities, sync runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("sync_runs",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("kind", sa.String(length=64), nullable=False),
    sa.Column("workspace", sa.String(length=255), nullable=False),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("api_calls", sa.Integer(), nullable=False),
    sa.Column("calls_by_family", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
    sa.Column("counts", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
    sa.Column("cursor", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True),
    sa.Column("duration_ms", sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs"))
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sync_runs_kind_workspace_started_at"), ["kind", "workspace", "started_at"], unique=False)

    op.create_table("workspaces",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("uuid", sa.String(length=38), nullable=False),
    sa.Column("slug", sa.String(length=255), nullable=False),
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_workspaces")),
    sa.UniqueConstraint("slug", name=op.f("uq_workspaces_slug")),
    sa.UniqueConstraint("uuid", name=op.f("uq_workspaces_uuid"))
    )
    op.create_table("projects",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("uuid", sa.String(length=38), nullable=False),
    sa.Column("workspace_id", sa.Integer(), nullable=False),
    sa.Column("key", sa.String(length=64), nullable=False),
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_projects_workspace_id_workspaces"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    sa.UniqueConstraint("uuid", name=op.f("uq_projects_uuid")),
    sa.UniqueConstraint("workspace_id", "key", name=op.f("uq_projects_workspace_id_key"))
    )
    op.create_table("repositories",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("uuid", sa.String(length=38), nullable=False),
    sa.Column("workspace_id", sa.Integer(), nullable=False),
    sa.Column("project_id", sa.Integer(), nullable=True),
    sa.Column("slug", sa.String(length=255), nullable=False),
    sa.Column("full_name", sa.String(length=512), nullable=False),
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("is_private", sa.Boolean(), nullable=False),
    sa.Column("language", sa.String(length=64), nullable=False),
    sa.Column("default_branch", sa.String(length=255), nullable=True),
    sa.Column("head_commit", sa.String(length=40), nullable=True),
    sa.Column("created_on", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_on", sa.DateTime(timezone=True), nullable=True),
    sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name=op.f("fk_repositories_project_id_projects"), ondelete="SET NULL"),
    sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_repositories_workspace_id_workspaces"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_repositories")),
    sa.UniqueConstraint("uuid", name=op.f("uq_repositories_uuid"))
    )
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_repositories_project_id"), ["project_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_repositories_workspace_id_slug"), ["workspace_id", "slug"], unique=False)

    op.create_table("catalog_files",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("repository_id", sa.Integer(), nullable=False),
    sa.Column("path", sa.String(length=1024), nullable=False),
    sa.Column("commit", sa.String(length=40), nullable=True),
    sa.Column("etag", sa.String(length=255), nullable=True),
    sa.Column("content_hash", sa.String(length=64), nullable=True),
    sa.Column("parse_error", sa.Text(), nullable=True),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"], name=op.f("fk_catalog_files_repository_id_repositories"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_files")),
    sa.UniqueConstraint("repository_id", "path", name=op.f("uq_catalog_files_repository_id_path"))
    )
    op.create_table("catalog_entities",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("entity_ref", sa.String(length=512), nullable=False),
    sa.Column("kind", sa.String(length=64), nullable=False),
    sa.Column("namespace", sa.String(length=255), nullable=False),
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
    sa.Column("content_hash", sa.String(length=64), nullable=False),
    sa.Column("source", sa.String(length=32), nullable=False),
    sa.Column("repository_id", sa.Integer(), nullable=True),
    sa.Column("catalog_file_id", sa.Integer(), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["catalog_file_id"], ["catalog_files.id"], name=op.f("fk_catalog_entities_catalog_file_id_catalog_files"), ondelete="SET NULL"),
    sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"], name=op.f("fk_catalog_entities_repository_id_repositories"), ondelete="SET NULL"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_entities")),
    sa.UniqueConstraint("entity_ref", name=op.f("uq_catalog_entities_entity_ref"))
    )
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_catalog_entities_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_catalog_entities_repository_id"), ["repository_id"], unique=False)



def downgrade() -> None:
    with op.batch_alter_table("catalog_entities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalog_entities_repository_id"))
        batch_op.drop_index(batch_op.f("ix_catalog_entities_kind"))

    op.drop_table("catalog_entities")
    op.drop_table("catalog_files")
    with op.batch_alter_table("repositories", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repositories_workspace_id_slug"))
        batch_op.drop_index(batch_op.f("ix_repositories_project_id"))

    op.drop_table("repositories")
    op.drop_table("projects")
    op.drop_table("workspaces")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sync_runs_kind_workspace_started_at"))

    op.drop_table("sync_runs")
