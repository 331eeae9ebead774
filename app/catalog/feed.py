"""Reading the change feed: what a Backstage provider must apply after a cursor.

Two kinds of cursor, both opaque to the client:

- `0` starts a snapshot: the live entities, paged by id, with the change number that was
  newest when the snapshot began (the horizon) carried in the cursor (`s<horizon>.<id>`).
  Deletions from before the snapshot are not served: a reader starting from nothing does not
  need them. When the snapshot is done the cursor is the horizon, and every change made while
  it was being read follows as deltas (some entities come twice; applying them is idempotent).
- `<n>` serves the changes numbered above n, in number order, each entity in its state now
  (later changes of it come again later, so a reader always converges). An entity live now
  is `added`; a retired one is `removed`, its ref as Backstage's `stringifyEntityRef` writes it.

A cursor below the retention's floor, or above any number this database gave out, is
`CursorGone`: the reader starts again from 0 (a full mutation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.catalog.changes import change_floor
from app.catalog.entities import served_body
from app.models import CatalogChange, CatalogEntity

CURSOR_PATTERN = re.compile(r"^(?:0|[1-9][0-9]{0,17}|s(?:0|[1-9][0-9]{0,17})\.[0-9]{1,18})$")


class CursorGone(Exception):
    """The cursor names changes bbsync no longer has (or never had)."""


@dataclass(frozen=True)
class Cursor:
    after: int  # the change number already applied (the horizon while in a snapshot)
    snapshot_after: int | None = None  # in a snapshot: the last entity id served

    @classmethod
    def parse(cls, text: str) -> Cursor:
        if not CURSOR_PATTERN.match(text):
            raise ValueError("not a cursor this feed gave out")
        if text.startswith("s"):
            horizon, _, entity = text[1:].partition(".")
            return cls(int(horizon), int(entity))
        return cls(int(text))

    def __str__(self) -> str:
        if self.snapshot_after is None:
            return str(self.after)
        return f"s{self.after}.{self.snapshot_after}"


@dataclass
class FeedPage:
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    cursor: str = "0"
    more: bool = False


def backstage_ref(kind: str, namespace: str, name: str) -> str:
    """As `stringifyEntityRef` of `@backstage/catalog-model` (1.10) writes it: every part
    lowercased, which is how Backstage matches the refs a provider removes."""
    return f"{kind}:{namespace or 'default'}/{name}".lower()


def read_changes(session: Session, text: str, limit: int) -> FeedPage:
    """One page of the feed after the cursor `text` (`ValueError` when malformed)."""
    cursor = Cursor.parse(text)
    newest = int(session.scalar(select(func.max(CatalogChange.id))) or 0)
    if text == "0":
        return _snapshot(session, newest, 0, limit)
    if cursor.after < change_floor(session):
        raise CursorGone("older than the change log keeps")
    if cursor.after > newest:
        raise CursorGone("not from this bbsync database")
    if cursor.snapshot_after is not None:
        return _snapshot(session, cursor.after, cursor.snapshot_after, limit)
    return _deltas(session, cursor.after, limit)


# The largest id an integer primary key holds (PostgreSQL `integer`); a cursor may name more
# (18 digits), which the database would refuse as out of range: past it there is nothing.
MAX_ENTITY_ID = 2**31 - 1


def _snapshot(session: Session, horizon: int, after_id: int, limit: int) -> FeedPage:
    after_id = min(after_id, MAX_ENTITY_ID)
    rows = list(
        session.scalars(
            select(CatalogEntity)
            .where(CatalogEntity.deleted_at.is_(None), CatalogEntity.id > after_id)
            .order_by(CatalogEntity.id)
            .limit(limit + 1)
        )
    )
    page = FeedPage(added=[_body(e) for e in rows[:limit]])
    if len(rows) > limit:
        page.cursor, page.more = str(Cursor(horizon, rows[limit - 1].id)), True
    else:
        page.cursor, page.more = str(horizon), _changes_after(session, horizon)
    return page


def _deltas(session: Session, after: int, limit: int) -> FeedPage:
    changes = session.execute(
        select(CatalogChange.id, CatalogChange.entity_id)
        .where(CatalogChange.id > after, CatalogChange.entity_id.is_not(None))
        .order_by(CatalogChange.id)
        .limit(limit + 1)
    ).all()
    more = len(changes) > limit
    changes = changes[:limit]
    # Each entity once, at the place of its last change in this page.
    last: dict[int, int] = {}
    for number, entity_id in changes:
        if entity_id is not None:
            last[entity_id] = number
    entities = {
        e.id: e
        for e in session.scalars(select(CatalogEntity).where(CatalogEntity.id.in_(list(last))))
    }
    page = FeedPage(cursor=str(changes[-1][0] if changes else after), more=more)
    for entity_id in sorted(last, key=last.__getitem__):
        entity = entities.get(entity_id)
        if entity is None:
            continue
        if entity.deleted_at is None:
            page.added.append(_body(entity))
        else:
            page.removed.append(backstage_ref(entity.kind, entity.namespace, entity.name))
    return page


def _changes_after(session: Session, number: int) -> bool:
    found = session.scalar(
        select(CatalogChange.id)
        .where(CatalogChange.id > number, CatalogChange.entity_id.is_not(None))
        .limit(1)
    )
    return found is not None


def _body(entity: CatalogEntity) -> dict[str, Any]:
    return served_body(entity.body, entity.source, entity.workspace)
