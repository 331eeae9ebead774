"""gunicorn settings module (`gunicorn -c python:app.web.gunicorn_conf`).

The master checks bbsync's settings before it forks a worker: a bad setting stops the whole
server at once with one line, instead of every worker failing to boot and being respawned.
"""

from __future__ import annotations

import sys
from typing import Any

from app.config import SettingsError, load_settings
from app.web import check_web_settings


def on_starting(server: Any) -> None:
    try:
        check_web_settings(load_settings())
    except SettingsError as exc:
        print(f"bbsync: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
