"""People: workspace members, groups, repository permissions and the access audit.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("access_audit",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("workspace", sa.String(length=255), nullable=True),
    sa.Column("action", sa.String(length=64), nullable=False),
    sa.Column("subject", sa.String(length=512), nullable=False),
    sa.Column("detail", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_access_audit"))
    )
    with op.batch_alter_table("access_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_access_audit_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_access_audit_at"), ["at"], unique=False)

    op.create_table("bitbucket_groups",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("workspace_id", sa.Integer(), nullable=False),
    sa.Column("slug", sa.String(length=255), nullable=False),
    sa.Column("name", sa.String(length=255), nullable=False),
    sa.Column("permission", sa.String(length=16), nullable=True),
    sa.Column("members", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=True),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_bitbucket_groups_workspace_id_workspaces"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_bitbucket_groups")),
    sa.UniqueConstraint("workspace_id", "slug", name=op.f("uq_bitbucket_groups_workspace_id_slug"))
    )
    op.create_table("workspace_members",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("workspace_id", sa.Integer(), nullable=False),
    sa.Column("account_id", sa.String(length=128), nullable=False),
    sa.Column("uuid", sa.String(length=38), nullable=True),
    sa.Column("nickname", sa.String(length=255), nullable=True),
    sa.Column("display_name", sa.String(length=255), nullable=False),
    sa.Column("avatar_url", sa.Text(), nullable=True),
    sa.Column("email", sa.String(length=255), nullable=True),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"], name=op.f("fk_workspace_members_workspace_id_workspaces"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_members")),
    sa.UniqueConstraint("workspace_id", "account_id", name=op.f("uq_workspace_members_workspace_id_account_id"))
    )
    with op.batch_alter_table("workspace_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workspace_members_uuid"), ["uuid"], unique=False)

    op.create_table("repository_permissions",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("repository_id", sa.Integer(), nullable=False),
    sa.Column("principal_type", sa.String(length=8), nullable=False),
    sa.Column("principal", sa.String(length=255), nullable=False),
    sa.Column("permission", sa.String(length=16), nullable=False),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["repository_id"], ["repositories.id"], name=op.f("fk_repository_permissions_repository_id_repositories"), ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id", name=op.f("pk_repository_permissions")),
    sa.UniqueConstraint("repository_id", "principal_type", "principal", name=op.f("uq_repository_permissions_repository_id_principal_type_principal"))
    )
    with op.batch_alter_table("repository_permissions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_repository_permissions_principal"), ["principal"], unique=False)



def downgrade() -> None:
    with op.batch_alter_table("repository_permissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repository_permissions_principal"))

    op.drop_table("repository_permissions")
    with op.batch_alter_table("workspace_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspace_members_uuid"))

    op.drop_table("workspace_members")
    op.drop_table("bitbucket_groups")
    with op.batch_alter_table("access_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_audit_at"))
        batch_op.drop_index(batch_op.f("ix_access_audit_action"))

    op.drop_table("access_audit")
