"""Untrusted descriptors: what older versions took from descriptors and no longer may.

Data only, no schema change. Users and groups a descriptor declared leave the catalog now
(identity comes only from Bitbucket's member list), and the repositories whose descriptor
entities carry annotations bbsync owns are marked unchecked, so the next sync reads their
files again (one call each; a 304 rebuilds from the stored copy) under the new rules.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Annotations bbsync itself writes on descriptor entities (any other reserved key came from
# the descriptor), and the reserved spaces (app/catalog/descriptor_policy.py at this revision).
WRITTEN_BY_BBSYNC = {
    "bitbucket.org/repo-url",
    "bitbucket.com/project-slug",
    "bitbucket.org/project-slug",
    "bitbucket.org/workspace",
    "bitbucket.org/project-key",
    "bbsync.io/managed-by",
}
RESERVED_PREFIXES = ("bitbucket.org/", "bitbucket.com/", "bbsync.io/")
RESERVED = {"backstage.io/managed-by-location", "backstage.io/managed-by-origin-location"}

entities = sa.table(
    "catalog_entities",
    sa.column("id", sa.Integer),
    sa.column("kind", sa.String),
    sa.column("source", sa.String),
    sa.column("workspace", sa.String),
    sa.column("repository_id", sa.Integer),
    sa.column("body", sa.JSON),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("deleted_at", sa.DateTime(timezone=True)),
)
repositories = sa.table(
    "repositories",
    sa.column("id", sa.Integer),
    sa.column("full_name", sa.String),
    sa.column("catalog_checked_on", sa.DateTime(timezone=True)),
    sa.column("catalog_checked_head", sa.String),
)


def _tainted(annotations: dict[str, Any], full_name: str | None) -> bool:
    """True when an annotation bbsync owns holds a value a descriptor put there."""
    for key, value in annotations.items():
        lowered = str(key).lower()
        reserved = lowered in RESERVED or lowered.startswith(RESERVED_PREFIXES)
        if reserved and key not in WRITTEN_BY_BBSYNC:
            return True
    if full_name is None:
        return False
    workspace = full_name.split("/", 1)[0]
    return annotations.get("bitbucket.org/workspace", workspace) != workspace or any(
        annotations.get(key, full_name) != full_name
        for key in ("bitbucket.com/project-slug", "bitbucket.org/project-slug")
    )


def upgrade() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC)
    names = dict(bind.execute(sa.select(repositories.c.id, repositories.c.full_name)).all())
    people: list[int] = []
    recheck: set[int] = set()
    rows = bind.execute(
        sa.select(entities.c.id, entities.c.kind, entities.c.repository_id, entities.c.body).where(
            entities.c.source == "descriptor", entities.c.deleted_at.is_(None)
        )
    )
    for entity_id, kind, repository_id, body in rows:
        metadata = (body or {}).get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        if str(kind).lower() in ("user", "group"):
            people.append(entity_id)
        elif isinstance(annotations, dict) and not _tainted(annotations, names.get(repository_id)):
            continue
        if repository_id is not None:
            recheck.add(repository_id)
    for start in range(0, len(people), 500):
        bind.execute(
            entities.update()
            .where(entities.c.id.in_(people[start : start + 500]))
            .values(deleted_at=now, updated_at=now)
        )
    if people:
        # The change feed (0009) tells Backstage's provider these are gone.
        bind.execute(
            sa.text("INSERT INTO catalog_changes (entity_id, changed_at) VALUES (:id, :at)"),
            [{"id": entity_id, "at": now} for entity_id in people],
        )
    ids = sorted(recheck)
    for start in range(0, len(ids), 500):
        bind.execute(
            repositories.update()
            .where(repositories.c.id.in_(ids[start : start + 500]))
            .values(catalog_checked_on=None, catalog_checked_head=None)
        )


def downgrade() -> None:
    """Nothing to undo: the next sync under the older code reads the files as it did."""
