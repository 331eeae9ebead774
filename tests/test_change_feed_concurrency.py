"""The change feed under concurrent writers: a reader paging while others commit never skips
a change, on SQLite and PostgreSQL. The second test holds one writer inside its commit, after
it took its change number, while another writer commits: on PostgreSQL a plain sequence would
let the later writer's higher number be read first and the lower one be skipped for good."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from app.catalog.changes import retire_entities
from app.models import CatalogEntity, EntitySource
from app.runtime import Runtime
from app.sync.entity_writer import EntityWriter
from tests.fault_support import wait_until
from tests.test_change_feed import Mirror, component, feed_client, live

RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def rt(runtime_for: RuntimeFactory, migrated_url: str) -> Runtime:
    return runtime_for(DATABASE_URL=migrated_url)


def test_a_reader_paging_while_two_writers_commit_misses_nothing(rt: Runtime) -> None:
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        try:
            for i in range(30):
                with rt.sessions() as session:
                    writer = EntityWriter(session, "acme")
                    writer.write(component(f"{prefix}-{i}"), EntitySource.GENERATED)
                    if i % 3 == 2:  # edit one, retire another
                        writer.write(
                            component(f"{prefix}-{i - 1}", f"edit {i}"), EntitySource.GENERATED
                        )
                        retire_entities(session, CatalogEntity.name == f"{prefix}-{i - 2}")
                    session.commit()
        except BaseException as exc:  # handed to the test below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("left", "right")]
    mirror = Mirror(feed_client(rt))
    for thread in threads:
        thread.start()
    pages = 0
    while any(t.is_alive() for t in threads):
        mirror.page(limit=5)
        pages += 1
    for thread in threads:
        thread.join()
    assert errors == []
    mirror.drain(limit=5)
    assert pages > 1
    expected = live(rt)
    assert len(expected) == 2 * 20
    assert mirror.entities == expected


def test_a_change_numbered_first_is_served_before_one_committed_first(rt: Runtime) -> None:
    client = feed_client(rt)
    mirror = Mirror(client)
    mirror.drain()
    numbered = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with rt.sessions() as session:
                EntityWriter(session, "acme").write(component("first"), EntitySource.GENERATED)

                # Runs after the change log's own hook: the number is taken, not committed.
                @event.listens_for(session, "before_commit")
                def _hold(_session: Session) -> None:
                    numbered.set()
                    release.wait(60)

                session.commit()
        except BaseException as exc:
            errors.append(exc)

    def quick_writer() -> None:
        try:
            with rt.sessions() as session:
                EntityWriter(session, "acme").write(component("second"), EntitySource.GENERATED)
                session.commit()
        except BaseException as exc:
            errors.append(exc)

    slow = threading.Thread(target=slow_writer)
    slow.start()
    assert numbered.wait(60)
    quick = threading.Thread(target=quick_writer)
    quick.start()
    if rt.engine.dialect.name == "postgresql":
        wait_until(
            lambda: not quick.is_alive() or _waiting_for_advisory_lock(rt),
            60,
            "the second writer to commit or queue",
            interval=0.02,
        )
    # Neither change is readable yet: the first is not committed, the second waits for it.
    page: dict[str, Any] = mirror.page(limit=10)
    assert page["added"] == [] and page["removed"] == []
    release.set()
    slow.join()
    quick.join()
    assert errors == []
    names = [b["metadata"]["name"] for p in mirror.drain(limit=1) for b in p["added"]]
    assert names == ["first", "second"]
    assert mirror.entities == live(rt)


def _waiting_for_advisory_lock(rt: Runtime) -> bool:
    with rt.engine.connect() as connection:
        waiting = connection.scalar(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        )
    return bool(waiting)
