"""Removing what Bitbucket no longer lists, in one place: the guard against a mass removal,
and the retirements built on `app.store.retire` (the one soft-delete statement).

A listing that comes back short (an API hiccup, a credential that lost a scope) must not
empty the catalog: any removal of rows Bitbucket stopped listing goes through `guard_removal`
(`BBSYNC_MAX_DELETE_SHARE`, default 50 % of the live rows at once), either by `sweep`, which
counts, guards and retires in one call, or, where the caller holds the rows already and audits
each one (people), by `guard_removal` then `retire`. A refusal is logged at error and returned as
the sentence the run reports; nothing is removed then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import DeclarativeBase, Session

from app.catalog.changes import retire_entities
from app.models import CatalogEntity, CatalogFile
from app.store import retire

log = logging.getLogger(__name__)


def guard_removal(
    removing: int, total: int, max_share: float, *, refusal: str, event: str, **fields: Any
) -> str | None:
    """The guard: None when removing `removing` of `total` live rows at once is within
    `max_share`; else the reason, `refusal` formatted with `removing`, `total` and `share`
    (`max_share` as a percentage), after logging `event` at error with `fields`."""
    if not total or removing / total <= max_share:
        return None
    log.error(event, extra={**fields, "removing": removing, "total": total})
    return refusal.format(removing=removing, total=total, share=f"{max_share:.0%}")


@dataclass(frozen=True)
class Swept:
    removed: int  # rows retired (0 when refused or none were stale)
    refusal: str | None  # why nothing was removed, when the guard refused


def sweep(
    session: Session,
    model: type[DeclarativeBase],
    live: Sequence[ColumnElement[bool]],
    stale: Sequence[ColumnElement[bool]],
    max_share: float,
    *,
    refusal: str,
    event: str,
    retire_with: Callable[[], object] | None = None,
    **fields: Any,
) -> Swept:
    """Retire the rows of `model` matching `live` and `stale`, unless they are more than
    `max_share` of those matching `live` (see `guard_removal`). `retire_with` replaces the plain
    `retire` when more must go with the rows (entities with their files, say). The caller
    commits."""
    removing = _count(select(func.count()).select_from(model).where(*live, *stale), session)
    if not removing:
        return Swept(0, None)
    total = _count(select(func.count()).select_from(model).where(*live), session)
    reason = guard_removal(removing, total, max_share, refusal=refusal, event=event, **fields)
    if reason:
        return Swept(0, reason)
    if retire_with is None:
        retire(session, model, *live, *stale)
    else:
        retire_with()
    return Swept(removing, None)


def _count(stmt: Select[Any], session: Session) -> int:
    return int(session.scalar(stmt) or 0)


def retire_repository_catalog(
    session: Session,
    repositories: Select[Any] | list[int],
    *entity_conditions: ColumnElement[bool],
    at: datetime | None = None,
) -> int:
    """The entities and catalog files of `repositories` (their ids, or a select of them)
    leave the catalog; how many entities went. `entity_conditions` narrow the entities (to
    a workspace, say). Files are stamped `at` (default now)."""
    gone = retire_entities(
        session, CatalogEntity.repository_id.in_(repositories), *entity_conditions
    )
    retire(session, CatalogFile, CatalogFile.repository_id.in_(repositories), at=at)
    return gone
