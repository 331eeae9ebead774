"""The sweep after a complete catalog run: entities (and catalog files) of repositories gone
from Bitbucket leave the catalog, unless that would remove more than `max_delete_share` of
the workspace's live entities at once."""

from __future__ import annotations

import logging

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.catalog.changes import retire_entities
from app.models import CatalogEntity, CatalogFile, Repository, Workspace, utcnow

log = logging.getLogger(__name__)


def sweep_deleted_repositories(
    session: Session, ws: Workspace, max_delete_share: float
) -> tuple[str, int]:
    """What the sweep did (shown as the run's `sweep` count) and how many entities went."""
    gone = select(Repository.id).where(
        Repository.workspace_id == ws.id, Repository.deleted_at.is_not(None)
    )
    live = (CatalogEntity.workspace == ws.slug, CatalogEntity.deleted_at.is_(None))
    doomed = (
        session.scalar(
            select(func.count())
            .select_from(CatalogEntity)
            .where(*live, CatalogEntity.repository_id.in_(gone))
        )
        or 0
    )
    total = session.scalar(select(func.count()).select_from(CatalogEntity).where(*live)) or 0
    if not doomed:
        return "nothing to remove", 0
    if doomed / total > max_delete_share:
        log.error(
            "entity sweep refused",
            extra={"workspace": ws.slug, "doomed": doomed, "total": total},
        )
        return (
            f"refused: would remove {doomed} of {total} entities, more than {max_delete_share:.0%}"
        ), 0
    retire_entities(
        session, CatalogEntity.workspace == ws.slug, CatalogEntity.repository_id.in_(gone)
    )
    session.execute(
        update(CatalogFile)
        .where(CatalogFile.repository_id.in_(gone), CatalogFile.deleted_at.is_(None))
        .values(deleted_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return f"removed {doomed} entities of deleted repositories", doomed
