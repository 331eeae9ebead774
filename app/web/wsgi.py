"""WSGI entry for gunicorn (`app.web.wsgi:app`): the one place the web app is created."""

from __future__ import annotations

import sys

from app.config import SettingsError
from app.web import create_app

try:
    app = create_app()
except SettingsError as exc:
    print(f"bbsync: configuration error: {exc}", file=sys.stderr)
    sys.exit(2)
