"""Entry module for `celery -A workers.main worker|beat|flower`: the one place the worker's
Celery app is created, so importing anything else in `workers` has no side effects."""

from __future__ import annotations

import sys

from app.config import SettingsError, load_settings
from workers.celery_app import create_celery, setup_process

try:
    _settings = load_settings()
except SettingsError as exc:
    print(f"bbsync: configuration error: {exc}", file=sys.stderr)
    sys.exit(2)

setup_process(_settings)
celery = create_celery(_settings)
