"""Settings: the names in DESIGN.md, one clear line per mistake, secrets never shown."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import (
    CredentialKind,
    Secret,
    Settings,
    SettingsError,
    load_settings,
    settings_from_env,
)
from app.ops.logs import TextFormatter, secret_values


def test_defaults_follow_the_design_contract() -> None:
    settings = settings_from_env({})
    assert settings.database_url == "sqlite:///bbsync.db"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.bitbucket_api_url == "https://api.bitbucket.org/2.0"
    assert settings.rate_limit_per_hour == 1000
    assert settings.rate_reserve == 200
    assert settings.credential.kind is CredentialKind.ANONYMOUS


def test_heroku_postgres_url_is_accepted_with_the_psycopg_driver() -> None:
    settings = settings_from_env({"DATABASE_URL": "postgres://u:p@db.internal:5432/bbsync"})
    assert settings.database_url == "postgresql+psycopg://u:p@db.internal:5432/bbsync"


def test_workspaces_are_comma_separated() -> None:
    settings = settings_from_env({"BITBUCKET_WORKSPACES": " acme, beta ,,"})
    assert settings.workspaces == ("acme", "beta")


@pytest.mark.parametrize(
    ("env", "variable", "words"),
    [
        (
            {"BITBUCKET_ACCESS_TOKEN": "t", "BITBUCKET_EMAIL": "a@b.c", "BITBUCKET_API_TOKEN": "x"},
            "BITBUCKET_ACCESS_TOKEN",
            "only one kind",
        ),
        (
            {
                "BITBUCKET_API_TOKEN": "x",
                "BITBUCKET_OAUTH_CLIENT_ID": "id",
                "BITBUCKET_OAUTH_CLIENT_SECRET": "s",
                "BITBUCKET_EMAIL": "a@b.c",
            },
            "BITBUCKET_EMAIL/BITBUCKET_API_TOKEN",
            "only one kind",
        ),
        ({"BITBUCKET_API_URL": "ftp://example.com"}, "BITBUCKET_API_URL", "scheme"),
        ({"BITBUCKET_API_URL": "http://host:notaport/2.0"}, "BITBUCKET_API_URL", "parsable"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL", "scheme"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL", "scheme"),
        ({"BITBUCKET_RATE_LIMIT_PER_HOUR": "0"}, "BITBUCKET_RATE_LIMIT_PER_HOUR", "positive"),
        ({"BITBUCKET_RATE_LIMIT_PER_HOUR": "-5"}, "BITBUCKET_RATE_LIMIT_PER_HOUR", "positive"),
        ({"BITBUCKET_RATE_LIMIT_PER_HOUR": "lots"}, "BITBUCKET_RATE_LIMIT_PER_HOUR", "whole"),
        ({"BITBUCKET_RATE_RESERVE_PERCENT": "100"}, "BITBUCKET_RATE_RESERVE_PERCENT", "below"),
        ({"BITBUCKET_EMAIL": "a@b.c"}, "BITBUCKET_API_TOKEN", "required"),
        ({"BITBUCKET_OAUTH_CLIENT_ID": "id"}, "BITBUCKET_OAUTH_CLIENT_SECRET", "required"),
        ({"PORT": "0"}, "PORT", "positive"),
        ({"BBSYNC_DESCRIPTOR_KINDS": "Component,User"}, "BBSYNC_DESCRIPTOR_KINDS", "User"),
        ({"BBSYNC_DESCRIPTOR_KINDS": "group"}, "BBSYNC_DESCRIPTOR_KINDS", "only from Bitbucket"),
        ({"BBSYNC_DESCRIPTOR_KINDS": "Component,Widget"}, "BBSYNC_DESCRIPTOR_KINDS", "Widget"),
        ({"BBSYNC_DESCRIPTOR_KINDS": ", ,"}, "BBSYNC_DESCRIPTOR_KINDS", "at least one"),
        ({"BBSYNC_RUN_STALE_SECONDS": "30"}, "BBSYNC_RUN_STALE_SECONDS", "3 heartbeats"),
        ({"BBSYNC_RUN_HEARTBEAT_SECONDS": "0"}, "BBSYNC_RUN_HEARTBEAT_SECONDS", "positive"),
        ({"BITBUCKET_429_PROBE_SECONDS": "soon"}, "BITBUCKET_429_PROBE_SECONDS", "whole"),
    ],
)
def test_invalid_configuration_names_the_variable(
    env: dict[str, str], variable: str, words: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_env(env)
    message = str(caught.value)
    assert message.startswith(variable + ":")
    assert words in message
    assert "\n" not in message


def test_secrets_never_appear_in_reprs_or_errors() -> None:
    settings = settings_from_env(
        {
            "BITBUCKET_OAUTH_CLIENT_ID": "client-1",
            "BITBUCKET_OAUTH_CLIENT_SECRET": "very-secret-value",
            "BITBUCKET_WEBHOOK_SECRET": "hook-secret-1,hook-secret-2",
        }
    )
    text = repr(settings)
    assert "very-secret-value" not in text and "hook-secret" not in text
    assert settings.credential.secret.reveal() == "very-secret-value"
    assert [s.reveal() for s in settings.webhook_secrets] == ["hook-secret-1", "hook-secret-2"]
    with pytest.raises(SettingsError) as caught:
        settings_from_env({"BITBUCKET_ACCESS_TOKEN": "tok-abcdef", "BITBUCKET_EMAIL": "a@b.c"})
    assert "tok-abcdef" not in str(caught.value)
    assert str(Secret("x")) == "Secret('***')"


def test_each_credential_kind_has_its_own_budget_identity() -> None:
    token = settings_from_env({"BITBUCKET_ACCESS_TOKEN": "t1"}).credential
    other_token = settings_from_env({"BITBUCKET_ACCESS_TOKEN": "t2"}).credential
    user = settings_from_env({"BITBUCKET_EMAIL": "a@b.c", "BITBUCKET_API_TOKEN": "x"}).credential
    same_user_new_token = settings_from_env(
        {"BITBUCKET_EMAIL": "a@b.c", "BITBUCKET_API_TOKEN": "y"}
    ).credential
    assert token.fingerprint != other_token.fingerprint
    # Bitbucket counts API tokens per user: a new token of the same user shares the budget.
    assert user.fingerprint == same_user_new_token.fingerprint
    assert "t1" not in token.fingerprint


def test_dotenv_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("BITBUCKET_WORKSPACES=from-file\nBITBUCKET_RATE_LIMIT_PER_HOUR=50\n")
    monkeypatch.setenv("BITBUCKET_RATE_LIMIT_PER_HOUR", "70")
    monkeypatch.delenv("BITBUCKET_WORKSPACES", raising=False)
    settings = load_settings(env_file)
    assert settings.workspaces == ("from-file",)
    assert settings.rate_limit_per_hour == 70


def test_a_process_with_bad_config_stops_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "BITBUCKET_RATE_LIMIT_PER_HOUR": "0", "BITBUCKET_ACCESS_TOKEN": "s3cret"}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "status"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "bbsync: configuration error: BITBUCKET_RATE_LIMIT_PER_HOUR: must be positive, got 0"
    ]
    assert "s3cret" not in result.stderr + result.stdout


def test_descriptor_kinds_default_to_software_and_accept_an_opt_in() -> None:
    assert settings_from_env({}).descriptor_kinds == (
        "Component",
        "API",
        "System",
        "Domain",
        "Resource",
    )
    chosen = settings_from_env({"BBSYNC_DESCRIPTOR_KINDS": "component, api,Location,template"})
    assert chosen.descriptor_kinds == ("Component", "API", "Location", "Template")


def test_backstage_identity_defaults_to_backstage_and_needs_the_issuer() -> None:
    settings = settings_from_env({})
    assert settings.backstage_audience == "backstage"
    assert settings.action_timeout_seconds == 10
    jwks = "https://backstage.example.com/api/auth/.well-known/jwks.json"
    with pytest.raises(SettingsError) as caught:
        settings_from_env({"BBSYNC_BACKSTAGE_JWKS_URL": jwks})
    message = str(caught.value)
    assert message.startswith("BBSYNC_BACKSTAGE_ISSUER:") and "\n" not in message
    assert "BBSYNC_BACKSTAGE_JWKS_URL" in message
    settings = settings_from_env(
        {
            "BBSYNC_BACKSTAGE_JWKS_URL": jwks,
            "BBSYNC_BACKSTAGE_ISSUER": "https://backstage.example.com/api/auth",
        }
    )
    assert settings.backstage_issuer == "https://backstage.example.com/api/auth"
    assert settings.backstage_audience == "backstage"


def test_endpoint_locks_are_read_and_never_shown() -> None:
    settings = settings_from_env(
        {
            "BBSYNC_CATALOG_TOKENS": "cat-1, cat-2,",
            "BBSYNC_METRICS_TOKEN": "scrape-1",
            "BBSYNC_STATUS_BASIC_AUTH": "ops:pa:ss,viewer:pw-2",
        }
    )
    assert [t.reveal() for t in settings.catalog_tokens] == ["cat-1", "cat-2"]
    assert [t.reveal() for t in settings.metrics_tokens] == ["scrape-1"]
    assert [(u, p.reveal()) for u, p in settings.status_basic_auth] == [
        ("ops", "pa:ss"),
        ("viewer", "pw-2"),
    ]
    text = repr(settings)
    assert not any(secret in text for secret in ("cat-1", "scrape-1", "pa:ss", "pw-2"))
    unset = settings_from_env({})
    assert (unset.catalog_tokens, unset.metrics_tokens, unset.status_basic_auth) == ((), (), ())


@pytest.mark.parametrize(
    ("env", "variable", "hidden"),
    [
        (
            {"BBSYNC_STATUS_BASIC_AUTH": "ops:secret-1,nopassword"},
            "BBSYNC_STATUS_BASIC_AUTH",
            "secret-1",
        ),
        ({"BBSYNC_STATUS_BASIC_AUTH": ":secret-2"}, "BBSYNC_STATUS_BASIC_AUTH", "secret-2"),
        ({"BBSYNC_ACTION_TIMEOUT_SECONDS": "13"}, "BBSYNC_ACTION_TIMEOUT_SECONDS", ""),
        ({"BBSYNC_ACTION_TIMEOUT_SECONDS": "0"}, "BBSYNC_ACTION_TIMEOUT_SECONDS", ""),
        ({"BBSYNC_ACTION_TIMEOUT_SECONDS": "soon"}, "BBSYNC_ACTION_TIMEOUT_SECONDS", ""),
    ],
)
def test_bad_access_settings_name_the_variable_and_hide_the_value(
    env: dict[str, str], variable: str, hidden: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from_env(env)
    message = str(caught.value)
    assert message.startswith(variable + ":") and "\n" not in message
    assert not hidden or hidden not in message


def test_each_default_is_written_once_and_every_variable_is_documented() -> None:
    # The defaults `Settings()` declares are the ones an empty environment gets.
    assert settings_from_env({}) == Settings()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    variables = declared_variables()
    assert len(variables) == len(set(variables)) > 50
    assert [v for v in variables if f"`{v}`" not in readme] == []


def test_a_given_mapping_is_read_and_not_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BITBUCKET_RATE_LIMIT_PER_HOUR", "70")
    monkeypatch.setenv("BITBUCKET_ACCESS_TOKEN", "from-the-process")
    settings = settings_from_env({"BITBUCKET_WORKSPACES": "acme"})
    assert settings.rate_limit_per_hour == 1000
    assert settings.credential.kind is CredentialKind.ANONYMOUS
    # A blank value is unset: the default, not an error.
    assert settings_from_env({"BITBUCKET_RATE_LIMIT_PER_HOUR": "  "}).rate_limit_per_hour == 1000


def test_every_secret_is_masked_in_log_lines() -> None:
    settings = settings_from_env(
        {
            "BITBUCKET_ACCESS_TOKEN": "tok-1",
            "BITBUCKET_WEBHOOK_SECRET": "hook-1",
            "BBSYNC_API_TOKENS": "api-1",
            "BBSYNC_CATALOG_TOKENS": "cat-1",
            "BBSYNC_METRICS_TOKEN": "met-1",
            "BBSYNC_STATUS_BASIC_AUTH": "ops:pw-1",
            "SENTRY_DSN": "https://key-1@sentry.example.com/1",
        }
    )
    assert set(secret_values(settings)) == {
        "tok-1",
        "hook-1",
        "api-1",
        "cat-1",
        "met-1",
        "pw-1",
        "https://key-1@sentry.example.com/1",
    }
    record = logging.LogRecord("t", logging.INFO, "", 0, "sent %s", ("cat-1 and pw-1",), None)
    line = TextFormatter(secret_values(settings)).format(record)
    assert "cat-1" not in line and "pw-1" not in line


def declared_variables() -> list[str]:
    return [f.metadata["setting"].variable for f in dataclasses.fields(Settings) if f.metadata]
