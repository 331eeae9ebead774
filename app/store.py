"""Statements that work the same on PostgreSQL and SQLite: upserts (`INSERT … ON CONFLICT DO
UPDATE`) and the soft-delete every retirement uses (`UPDATE … RETURNING`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, inspect, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Session

from app.models import utcnow

# Ids per retire statement when the rows are named (well under every bind-parameter limit).
RETIRE_CHUNK = 500


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


def retire(
    session: Session,
    model: type[DeclarativeBase],
    *conditions: ColumnElement[bool],
    ids: Iterable[int] | None = None,
    column: str = "deleted_at",
    at: datetime | None = None,
    synchronize: bool = False,
) -> list[int]:
    """The one retire statement: soft-delete the live rows of `model` matching `conditions`
    (`UPDATE … SET <column> = at WHERE <column> IS NULL AND …`), returning their ids. A row
    already retired keeps when it went. `ids` restricts it to those rows (sent in chunks, so
    any number fits the bind-parameter limits). `synchronize` also updates the rows this
    session holds, for callers that read them afterwards. The caller commits.

    A removal of what Bitbucket stopped listing goes through `app.sync.retire` first, which
    refuses a mass removal.
    """
    key = inspect(model).primary_key[0]
    stmt = (
        update(model)
        .where(getattr(model, column).is_(None), *conditions)
        .values({column: at or utcnow()})
        .returning(key)
        .execution_options(synchronize_session="fetch" if synchronize else False)
    )
    if ids is None:
        return list(session.execute(stmt).scalars())
    wanted, retired = sorted(set(ids)), list[int]()
    for start in range(0, len(wanted), RETIRE_CHUNK):
        chunk = stmt.where(key.in_(wanted[start : start + RETIRE_CHUNK]))
        retired.extend(session.execute(chunk).scalars())
    return retired
