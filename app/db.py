"""Engine and session factory. Nothing is created at import: callers build them from settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")


def make_engine(database_url: str, pre_ping: bool = True, **kwargs: Any) -> Engine:
    """An engine for SQLite (WAL, foreign keys, busy timeout) or PostgreSQL (pre-ping unless
    `pre_ping` is False: then the caller handles a connection the server dropped)."""
    if database_url.startswith("sqlite"):
        engine = create_engine(
            database_url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the web process read while a worker writes; foreign keys are off by default.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(database_url, pool_pre_ping=pre_ping, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def retry_dropped(work: Callable[[], T]) -> T:
    """`work()`, once more if it failed on a pooled connection the server had dropped (a
    database restart or failover), for engines without a ping at checkout. Only for work
    that may run twice: reads, or statements that deduplicate themselves."""
    try:
        return work()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return work()


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
