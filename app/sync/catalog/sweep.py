"""The sweep after a complete catalog run: entities (and catalog files) of repositories gone
from Bitbucket leave the catalog, unless that would remove more than `max_delete_share` of
the workspace's live entities at once (the guard in `app.sync.retire`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import CatalogEntity, Repository, Workspace
from app.sync.retire import retire_repository_catalog, sweep


def sweep_deleted_repositories(
    session: Session, ws: Workspace, max_delete_share: float
) -> tuple[str, int]:
    """What the sweep did (shown as the run's `sweep` count) and how many entities went."""
    gone = select(Repository.id).where(
        Repository.workspace_id == ws.id, Repository.deleted_at.is_not(None)
    )
    swept = sweep(
        session,
        CatalogEntity,
        live=(CatalogEntity.workspace == ws.slug, CatalogEntity.deleted_at.is_(None)),
        stale=(CatalogEntity.repository_id.in_(gone),),
        max_share=max_delete_share,
        refusal="refused: would remove {removing} of {total} entities, more than {share}",
        event="entity sweep refused",
        retire_with=lambda: retire_repository_catalog(
            session, gone, CatalogEntity.workspace == ws.slug
        ),
        workspace=ws.slug,
    )
    if swept.refusal:
        return swept.refusal, 0
    if not swept.removed:
        return "nothing to remove", 0
    return f"removed {swept.removed} entities of deleted repositories", swept.removed
