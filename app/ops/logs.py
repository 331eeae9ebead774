"""Logging: one JSON object per line (or plain text on a terminal), with structured fields
passed as `extra=`. Every configured secret is masked in the final line, whatever carried it."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from app.config import Settings

_context: ContextVar[dict[str, Any] | None] = ContextVar("bbsync_log_fields", default=None)


@contextmanager
def log_fields(**fields: Any) -> Iterator[None]:
    """Add fields (task, workspace, repository, delivery…) to every log line in this block."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFields(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


# Attributes every LogRecord has; anything else came from `extra=` and is a field.
_RECORD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


class _Masking(logging.Formatter):
    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        # Longest first so a secret containing another is masked whole.
        self._secrets = tuple(sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True))

    def mask(self, line: str) -> str:
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


class JsonFormatter(_Masking):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return self.mask(json.dumps(data, default=str))


class TextFormatter(_Masking):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += f"  {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.mask(line)


def secret_values(settings: Settings) -> tuple[str, ...]:
    """Every secret of the settings (credential, webhook secrets, every token, passwords, the
    Sentry DSN): what a log line never shows."""
    return settings.secret_values()


def configure_logging(settings: Settings) -> None:
    """Install one handler on the root logger (idempotent)."""
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    secrets = secret_values(settings)
    formatter: logging.Formatter = JsonFormatter(secrets) if use_json else TextFormatter(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_ContextFields())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_bbsync", False):
            root.removeHandler(existing)
    handler._bbsync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level)
