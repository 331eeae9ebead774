"""Shared fixtures: real PostgreSQL, SQLite and Redis on this machine, and the simulator as a
real process. Each test gets its own database and a clean Redis database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import redis

from app.config import Settings, settings_from_env
from app.runtime import Runtime
from bench import databases

if TYPE_CHECKING:
    from bitbucket_sim.testing import SimProcess

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BBSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
API_TOKEN = "test-api-token"
REDIS_TEST_URL = os.environ.get("BBSYNC_TEST_REDIS", "redis://127.0.0.1:6379/15")


def migrate(database_url: str, revision: str = "head") -> None:
    """Run the Alembic migrations, exactly as the Procfile's release phase does. A test that
    only needs a database at the head takes `migrated_url` / `migrated_postgres_url` instead,
    copies of one migrated template (`bench/databases.py`)."""
    databases.migrate(database_url, revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    databases.downgrade(database_url, revision)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"bbsync_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield databases.database_url(PG_ADMIN_URL, name)
    databases.drop(PG_ADMIN_URL, name)


@pytest.fixture
def migrated_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database at the migration head for one test: a copy of the template
    migrated once per migration head (`bench/databases.py`)."""
    with databases.migrated_database(PG_ADMIN_URL, "bbsync_test") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bbsync.db'}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database file at the migration head, migrated once per test session."""
    path = tmp_path_factory.mktemp("sqlite-template") / "migrated.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def migrated_sqlite_url(sqlite_url: str, sqlite_template: Path, tmp_path: Path) -> str:
    """`sqlite_url` (the same file) at the migration head: a copy of `sqlite_template`."""
    shutil.copyfile(sqlite_template, tmp_path / "bbsync.db")
    return sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both databases bbsync supports: the test runs once on each."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bbsync.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated_url(request: pytest.FixtureRequest) -> str:
    """`database_url` at the migration head: a copy of a migrated template."""
    fixture = "migrated_sqlite_url" if request.param == "sqlite" else "migrated_postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(scope="module")
def broker_url() -> str:
    """The Celery broker of the running systems tests start (`tests/test_webhook_flow.py`'s
    `system`): Redis. The webhook flow itself overrides this to run on RabbitMQ too."""
    return REDIS_TEST_URL


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    client.close()
    return REDIS_TEST_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimProcess]]:
    """Start simulator processes with given options; all stop after the test."""
    from bitbucket_sim.testing import SimProcess

    started: list[SimProcess] = []

    def start(**options: Any) -> SimProcess:
        options.setdefault("workspace", "acme")
        options.setdefault("repos", 30)
        options.setdefault("seed", 1)
        sim = SimProcess(**options)
        sim.__enter__()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.__exit__(None, None, None)


@pytest.fixture
def sim(sim_factory: Callable[..., SimProcess]) -> SimProcess:
    """A simulator with 30 repositories in workspace `acme`, accepting an access token."""
    return sim_factory(access_token="sim-token")


def make_settings(**env: str) -> Settings:
    return settings_from_env(env)


@pytest.fixture
def settings_for(redis_url: str, sqlite_url: str) -> Callable[..., Settings]:
    """Settings pointing at a simulator (and by default SQLite and the test Redis)."""

    def build(sim: SimProcess | None = None, **overrides: str) -> Settings:
        env = {
            "DATABASE_URL": sqlite_url,
            "REDIS_URL": redis_url,
            "BITBUCKET_WORKSPACES": "acme",
            "BITBUCKET_ACCESS_TOKEN": "sim-token",
            "LOG_FORMAT": "text",
            "BITBUCKET_WEBHOOK_SECRET": "test-secret",
            "BBSYNC_API_TOKENS": API_TOKEN,
        }
        if sim is not None:
            env["BITBUCKET_API_URL"] = sim.api_url
        env.update(overrides)
        return settings_from_env({k: v for k, v in env.items() if v != ""})

    return build


@pytest.fixture
def runtime_for(settings_for: Callable[..., Settings]) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def build(sim: SimProcess | None = None, **overrides: str) -> Runtime:
        rt = Runtime(settings_for(sim, **overrides))
        made.append(rt)
        return rt

    yield build
    for rt in made:
        if "engine" in rt.__dict__:
            rt.engine.dispose()


# The console script installed beside this interpreter (the venv's bin).
BBSYNC = str(Path(sys.executable).parent / "bbsync")


def run_bbsync(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `bbsync` command in its own process, with `env` over this environment."""
    return subprocess.run(
        [BBSYNC, *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def api_client(app: Any) -> Any:
    """A Flask test client that sends the API's bearer token with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {API_TOKEN}"
    return client
