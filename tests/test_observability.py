"""Secrets never leave in a log line or a Sentry event, whatever carried them."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app.config import settings_from_env
from app.ops.logs import JsonFormatter, TextFormatter, configure_logging, secret_values
from app.ops.observability import scrub

SETTINGS = settings_from_env(
    {
        "BITBUCKET_ACCESS_TOKEN": "tok-very-secret",
        "BITBUCKET_WEBHOOK_SECRET": "hook-one,hook-two",
        "SENTRY_DSN": "https://key123@sentry.example/1",
        "LOG_FORMAT": "json",
    }
)


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"msg": message, "levelname": "INFO", "name": "t"})
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_fields_and_mask_every_secret() -> None:
    formatter = JsonFormatter(secret_values(SETTINGS))
    line = formatter.format(
        _record("calling with tok-very-secret", workspace="acme", header="Bearer tok-very-secret")
    )
    data = json.loads(line)
    assert data["message"] == "calling with ***"
    assert data["workspace"] == "acme"
    assert data["header"] == "Bearer ***"
    assert "hook-one" not in TextFormatter(secret_values(SETTINGS)).format(
        _record("secret hook-one rotated to hook-two")
    )


def test_configure_logging_installs_one_masking_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging(SETTINGS)
    configure_logging(SETTINGS)
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_bbsync", False)]
    assert len(ours) == 1
    logging.getLogger("bbsync.test").warning("token %s", "tok-very-secret")
    assert "tok-very-secret" not in stream.getvalue()
    assert '"message": "token ***"' in stream.getvalue()
    logging.getLogger().removeHandler(ours[0])


def test_sentry_events_are_scrubbed_before_they_leave() -> None:
    event = {
        "exception": {"values": [{"value": "401 for Bearer tok-very-secret"}]},
        "request": {"headers": [("Authorization", "Bearer tok-very-secret")]},
        "extra": {"dsn": "https://key123@sentry.example/1", "count": 3},
    }
    cleaned = scrub(event, secret_values(SETTINGS))
    text = json.dumps(cleaned)
    assert "tok-very-secret" not in text and "key123" not in text
    assert cleaned["extra"]["count"] == 3


def test_log_lines_carry_the_fields_of_their_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.ops.logs import log_fields

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging(SETTINGS)
    with log_fields(task="bbsync.sync.workspace", workspace="acme"):
        with log_fields(repository="acme/billing"):
            logging.getLogger("bbsync.test").warning("reading files")
        logging.getLogger("bbsync.test").warning("listing", extra={"workspace": "other"})
    logging.getLogger("bbsync.test").warning("outside")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["task"] == "bbsync.sync.workspace" and lines[0]["repository"] == "acme/billing"
    assert lines[1]["workspace"] == "other" and "repository" not in lines[1]
    assert "task" not in lines[2]
    for handler in [h for h in logging.getLogger().handlers if getattr(h, "_bbsync", False)]:
        logging.getLogger().removeHandler(handler)
