"""Alembic environment: the URL comes from bbsync's settings (or `-x url=...` / the config's
`sqlalchemy.url` set by a caller such as the tests); batch mode keeps SQLite ALTERs working."""

from __future__ import annotations

import sys

from alembic import context
from sqlalchemy import pool

from app.config import SettingsError, load_settings, normalise_database_url
from app.db import make_engine
from app.models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if url:
        return normalise_database_url(url)
    try:
        return load_settings().database_url
    except SettingsError as exc:
        print(f"bbsync: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
