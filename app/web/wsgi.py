"""WSGI entry for gunicorn (`app.web.wsgi:app`): the one place the web app is created."""

from __future__ import annotations

import sys

from app.config import SettingsError
from app.web import create_app

try:
    app = create_app()
except SettingsError as exc:
    print(f"bbsync: configuration error: {exc}", file=sys.stderr)
    # gunicorn halts (rather than respawning workers forever) when a worker exits with 4,
    # its "application failed to load" code; the master's own check usually stops it first.
    sys.exit(4)
