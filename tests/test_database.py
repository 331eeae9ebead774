"""The schema: migrations run on SQLite and PostgreSQL and agree with the models; upserts
insert and update on both; datetimes come back timezone-aware in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from app.db import make_engine, make_session_factory, session_scope
from app.models import Base, Project, Repository, Workspace
from app.store import upsert
from tests.conftest import downgrade, migrate

TABLES = {
    "workspaces",
    "projects",
    "repositories",
    "catalog_files",
    "catalog_entities",
    "sync_runs",
}


def test_migrations_create_every_table(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_models_and_migrations_agree(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == []
    finally:
        engine.dispose()


def test_migrations_downgrade_to_nothing_and_back(database_url: str) -> None:
    migrate(database_url)
    downgrade(database_url)
    engine = make_engine(database_url)
    try:
        assert not TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    migrate(database_url)


def test_upsert_inserts_then_updates_on_the_bitbucket_uuid(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    first_seen = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    try:
        with session_scope(sessions) as session:
            upsert(session, Workspace, [{"uuid": "{w1}", "slug": "acme", "name": "Acme"}], ["uuid"])
            workspace_id = session.scalars(select(Workspace.id)).one()
            rows = [
                {
                    "uuid": f"{{r{i}}}",
                    "workspace_id": workspace_id,
                    "slug": f"svc-{i}",
                    "full_name": f"acme/svc-{i}",
                    "updated_on": first_seen,
                }
                for i in range(3)
            ]
            assert upsert(session, Repository, rows, ["uuid"]) == 3
        with session_scope(sessions) as session:
            renamed = {
                **rows[1],
                "slug": "payments",
                "full_name": "acme/payments",
                "updated_on": first_seen + timedelta(hours=1),
            }
            upsert(session, Repository, [renamed], ["uuid"])
        with session_scope(sessions) as session:
            repos = {r.uuid: r for r in session.scalars(select(Repository))}
            assert len(repos) == 3
            assert repos["{r1}"].slug == "payments"
            assert repos["{r1}"].updated_on == first_seen + timedelta(hours=1)
            assert repos["{r1}"].updated_on.tzinfo is not None
            assert repos["{r0}"].slug == "svc-0"
    finally:
        engine.dispose()


def test_upsert_on_a_composite_unique_key(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    sessions = make_session_factory(engine)
    try:
        with session_scope(sessions) as session:
            upsert(session, Workspace, [{"uuid": "{w1}", "slug": "acme", "name": "Acme"}], ["uuid"])
            workspace_id = session.scalars(select(Workspace.id)).one()
            upsert(
                session,
                Project,
                [{"uuid": "{p1}", "workspace_id": workspace_id, "key": "PAY", "name": "Payments"}],
                ["uuid"],
            )
            upsert(
                session,
                Project,
                [
                    {
                        "uuid": "{p1}",
                        "workspace_id": workspace_id,
                        "key": "PAY",
                        "name": "Payments team",
                    }
                ],
                ["workspace_id", "key"],
                ["name"],
            )
        with session_scope(sessions) as session:
            assert session.scalars(select(Project.name)).all() == ["Payments team"]
    finally:
        engine.dispose()
