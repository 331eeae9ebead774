"""Throwaway PostgreSQL databases already at the migration head, for the tests and benchmarks.

Running every Alembic migration for each database costs far more than copying one that is
already migrated, so the migrations run once per migration head into a template database,
`bbsync_tmpl_<digest of migrations/env.py and migrations/versions/*.py>`, and each throwaway
database is `CREATE DATABASE ... TEMPLATE` of it. The template is built under a PostgreSQL
advisory lock, so pytest processes and benchmarks running at once (several worktrees, CI)
never build it twice nor clone it half-built; it is marked IS_TEMPLATE and closed to
connections (ALLOW_CONNECTIONS false) once complete, so nothing holds it open while it is
copied. Templates of older migration heads are dropped, all but the newest few, when a new one
is built. Tests of the migrations themselves must keep running them (`migrate` here, or
`tests.conftest.migrate`).

Not a benchmark itself; nothing here prints figures.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
TEMPLATE_PREFIX = "bbsync_tmpl_"
# Any fixed 64-bit number: the key of the advisory lock every builder takes.
TEMPLATE_LOCK = 0x62627379_6E63_746D
# Templates of older migration heads kept for other checkouts (branches) that may still use them.
TEMPLATES_KEPT = 8

_built: set[tuple[str, str]] = set()  # (admin URL, template) known complete in this process


def database_url(admin_url: str, name: str) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) of database `name` on the server of `admin_url`."""
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def _alembic(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Run the Alembic migrations on `url` in this process (what `alembic upgrade` does)."""
    command.upgrade(_alembic(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(_alembic(url), revision)


def migrations_digest() -> str:
    """Changes whenever a migration (or the environment that runs them) changes."""
    digest = hashlib.sha256()
    for path in sorted([MIGRATIONS / "env.py", *(MIGRATIONS / "versions").glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def template_name() -> str:
    return f"{TEMPLATE_PREFIX}{migrations_digest()}"


def ensure_template(admin_url: str) -> str:
    """The name of the migrated template for the current migrations, built if missing."""
    name = template_name()
    if (admin_url, name) in _built:
        return name
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # A builder that hangs must not hang everyone else forever.
        conn.execute("SET lock_timeout = '300s'")
        conn.execute("SELECT pg_advisory_lock(%s)", (TEMPLATE_LOCK,))
        try:
            row = conn.execute(
                "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if row is None or not row[0]:
                if row is not None:  # left half-built by a process that died
                    _drop(conn, name)
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                # env.py migrates through a NullPool engine it disposes: no connection remains.
                migrate(database_url(admin_url, name))
                conn.execute(
                    sql.SQL(
                        "ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
                    ).format(sql.Identifier(name))
                )
                _prune(conn, keep=name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK,))
    _built.add((admin_url, name))
    return name


def _drop(conn: psycopg.Connection[Any], name: str) -> None:
    ident = sql.Identifier(name)
    conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def _prune(conn: psycopg.Connection[Any], keep: str) -> None:
    """Drop templates of older migration heads beyond the newest `TEMPLATES_KEPT` (database
    oids grow with creation). One being copied right now is left for next time."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s AND datname <> %s"
        " ORDER BY oid DESC OFFSET %s",
        (TEMPLATE_PREFIX.replace("_", r"\_") + "%", keep, TEMPLATES_KEPT - 1),
    ).fetchall()
    for (old,) in rows:
        with suppress(psycopg.errors.ObjectInUse, psycopg.errors.LockNotAvailable):
            _drop(conn, old)


def create_migrated(admin_url: str, name: str, timeout: float = 30) -> str:
    """Create database `name` as a copy of the migrated template; its SQLAlchemy URL."""
    deadline = time.monotonic() + timeout
    while True:
        template = ensure_template(admin_url)
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
            return database_url(admin_url, name)
        except psycopg.errors.InvalidCatalogName:
            # Pruned by a builder of newer migrations in another checkout: build it again.
            _built.discard((admin_url, template))
            if time.monotonic() > deadline:
                raise
        except psycopg.errors.ObjectInUse:
            # "source database is being accessed by other users": not expected, since the
            # template takes no connections, but brief and harmless to wait out.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def migrated_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A fresh database at the migration head (`<prefix>_<random>`), dropped afterwards;
    its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = create_migrated(admin_url, name)
    try:
        yield url
    finally:
        drop(admin_url, name)
