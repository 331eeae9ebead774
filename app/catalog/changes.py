"""The catalog change log: every entity written or retired gets a change number, in commit
order, in the same transaction as the entity. `GET /catalog/changes` pages through it.

Why the numbers are taken at commit, under a lock: a reader asks for "changes after N". On
PostgreSQL, sequence values are handed out when asked for, not when the transaction commits,
so a transaction that took 10 and commits after another that took 11 would appear behind a
reader that has already moved past 11, and its change would be lost to that reader. Taking
the numbers right before COMMIT while holding a transaction-scoped advisory lock
(`pg_advisory_xact_lock`, released only after the commit is visible) makes number order and
commit order the same, so a reader never sees a gap that fills later. The lock is held for
one INSERT and the commit, never across a sync's HTTP calls. On SQLite a writer holds the
database's write lock from its first write to its commit, which serializes the same way.

Writers only say what changed (`record_written`, `retire_entities`); the numbers are written by
a `before_commit` hook on the session, so every path that commits (tasks, the CLI, tests) logs
its changes and a rollback logs none.
"""

from __future__ import annotations

import zlib
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, event, func, insert, inspect, select, text, update
from sqlalchemy.orm import Session

from app.models import CatalogChange, CatalogEntity, utcnow
from app.store import retire

_PENDING = "bbsync.catalog_changes"
# One lock for every writer of the change log (a 64-bit key: any stable number will do).
LOCK_KEY = zlib.crc32(b"bbsync.catalog_changes")


class _Pending:
    """The entities a session changed since its last commit."""

    def __init__(self) -> None:
        self.rows: list[CatalogEntity] = []  # may not have an id before the flush
        self.ids: set[int] = set()

    def clear(self) -> None:
        self.rows.clear()
        self.ids.clear()


def _pending(session: Session) -> _Pending:
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = _Pending()
        event.listen(session, "before_commit", _write_changes)
        event.listen(session, "after_rollback", _forget_changes)
    assert isinstance(pending, _Pending)
    return pending


def record_written(session: Session, row: CatalogEntity) -> None:
    """`row` was inserted, updated or revived: it gets a change number at commit."""
    _pending(session).rows.append(row)


def retire_entities(session: Session, *conditions: ColumnElement[bool]) -> int:
    """Soft-delete the live entities matching `conditions`, logging each; how many went."""
    ids = set(retire(session, CatalogEntity, *conditions))
    _pending(session).ids.update(ids)
    return len(ids)


def _write_changes(session: Session) -> None:
    pending: _Pending = session.info[_PENDING]
    if not pending.rows and not pending.ids:
        return
    session.flush()
    ids = set(pending.ids)
    for row in pending.rows:
        state = inspect(row)
        if state.persistent and row.id is not None:
            ids.add(row.id)
    pending.clear()
    if not ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    now = utcnow()
    session.execute(
        insert(CatalogChange), [{"entity_id": i, "changed_at": now} for i in sorted(ids)]
    )


def _forget_changes(session: Session) -> None:
    if not session.in_nested_transaction():
        pending: _Pending = session.info[_PENDING]
        pending.clear()


def change_floor(session: Session) -> int:
    """The newest change number the retention removed (0 when none was): cursors below it
    are too old to serve."""
    floor = session.scalar(
        select(func.max(CatalogChange.id)).where(CatalogChange.entity_id.is_(None))
    )
    return int(floor or 0)


def prune_changes(session: Session, retention_days: int) -> dict[str, Any]:
    """Drop changes older than the retention, leaving a floor row in place of the newest
    dropped one (so the numbering never restarts and old cursors get a 410). The caller
    commits."""
    cutoff = utcnow() - timedelta(days=retention_days)
    newest_old = session.scalar(
        select(func.max(CatalogChange.id)).where(CatalogChange.changed_at < cutoff)
    )
    if newest_old is None:
        return {"changes": 0}
    removed = session.execute(delete(CatalogChange).where(CatalogChange.id < newest_old))
    session.execute(
        update(CatalogChange).where(CatalogChange.id == newest_old).values(entity_id=None)
    )
    return {"changes": int(getattr(removed, "rowcount", 0) or 0), "change_floor": newest_old}
