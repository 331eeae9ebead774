"""Upserts that work the same on PostgreSQL and SQLite (`INSERT … ON CONFLICT DO UPDATE`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session


def upsert(
    session: Session,
    model: type[DeclarativeBase],
    rows: Sequence[dict[str, Any]],
    conflict_columns: Iterable[str],
    update_columns: Iterable[str] | None = None,
) -> int:
    """Insert `rows`, updating `update_columns` (default: every given column but the keys)
    where a row with the same `conflict_columns` exists. One statement for the whole batch.

    Returns the number of rows sent. The caller commits.
    """
    if not rows:
        return 0
    table: Table = model.__table__  # type: ignore[assignment]
    keys = list(conflict_columns)
    if update_columns is None:
        update_columns = [c for c in rows[0] if c not in keys]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg_stmt = postgresql.insert(table).values(list(rows))
        stmt: Any = pg_stmt.on_conflict_do_update(
            index_elements=keys,
            set_={c: pg_stmt.excluded[c] for c in update_columns},
        )
    elif dialect == "sqlite":
        lite_stmt = sqlite.insert(table).values(list(rows))
        stmt = lite_stmt.on_conflict_do_update(
            index_elements=keys,
            set_={c: lite_stmt.excluded[c] for c in update_columns},
        )
    else:  # pragma: no cover - the settings only accept these two
        raise NotImplementedError(f"upsert is not supported on {dialect}")
    session.execute(stmt)
    return len(rows)
