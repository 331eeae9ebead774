"""Project groups: a Group per Bitbucket project with live repositories (the default owners
of generated components), and one for the workspace when some repository has no project."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.catalog.changes import retire_entities
from app.catalog.entities import EntityBuilder
from app.models import CatalogEntity, EntitySource, Project, Repository, Workspace
from app.sync.entity_writer import EntityWriter, WriteOutcome


def write_project_groups(
    session: Session, builder: EntityBuilder, ws: Workspace
) -> tuple[WriteOutcome, int]:
    """Write the groups of `ws` and retire the ones no longer owning anything: what was
    written (with conflicts) and how many were retired. The caller commits."""
    writer = EntityWriter(session, ws.slug)
    outcome = WriteOutcome()
    live_projects = session.scalars(
        select(Project).where(
            Project.workspace_id == ws.id,
            Project.id.in_(
                select(Repository.project_id).where(
                    Repository.workspace_id == ws.id, Repository.deleted_at.is_(None)
                )
            ),
        )
    ).all()
    keep = set()
    for project in live_projects:
        group = builder.project_group(ws.slug, project.key, project.name)
        if writer.write(group, EntitySource.BITBUCKET, outcome=outcome):
            keep.add(group.ref)
    orphans = session.scalar(
        select(func.count())
        .select_from(Repository)
        .where(
            Repository.workspace_id == ws.id,
            Repository.deleted_at.is_(None),
            Repository.project_id.is_(None),
        )
    )
    if orphans:
        group = builder.workspace_group(ws.slug)
        if writer.write(group, EntitySource.BITBUCKET, outcome=outcome):
            keep.add(group.ref)
    stale = [
        CatalogEntity.workspace == ws.slug,
        CatalogEntity.source == EntitySource.BITBUCKET.value,
        CatalogEntity.kind == "Group",
    ]
    if keep:
        stale.append(CatalogEntity.entity_ref.not_in(keep))
    return outcome, retire_entities(session, *stale)
