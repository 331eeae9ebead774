"""Settings read once from the environment (and a `.env` file), validated at start.

Every process (web, worker, beat, CLI) builds one `Settings` with `load_settings()`.
An invalid value raises `SettingsError` whose message is one line naming the variable
and what is wrong; entry points print it and exit. Secrets are wrapped in `Secret` so
they never show in a repr, a log line or an error message.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from app.settings_access import endpoint_access
from app.settings_values import (
    Secret,
    SettingsError,
    boolean,
    calendar_date,
    catalog_paths,
    choice,
    descriptor_kinds,
    mapping_path,
    positive_number,
    rate,
    share,
    url,
    whole_number,
)

DEFAULT_DATABASE_URL = "sqlite:///bbsync.db"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DATABASE_SCHEMES = (
    "sqlite",
    "postgresql",
    "postgres",
    "postgresql+psycopg",
    "sqlite+pysqlite",
    "postgresql+psycopg2",
)
DEFAULT_API_URL = "https://api.bitbucket.org/2.0"
DEFAULT_OAUTH_TOKEN_URL = "https://bitbucket.org/site/oauth2/access_token"


class CredentialKind(StrEnum):
    ACCESS_TOKEN = "access_token"
    API_TOKEN = "api_token"  # Atlassian account email + API token, HTTP Basic
    OAUTH = "oauth_client_credentials"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Credential:
    """One Bitbucket credential. `identity` is what Bitbucket counts the rate limit on."""

    kind: CredentialKind
    identity: str = ""  # email or OAuth client id; empty for access tokens (the token is it)
    secret: Secret = field(default_factory=lambda: Secret(""))
    token_url: str = ""

    @property
    def fingerprint(self) -> str:
        """A stable, non-reversible id for this credential: keys its budget and token cache.

        Bitbucket counts access tokens per token, API tokens per user and OAuth per consumer,
        so the fingerprint follows the same unit.
        """
        if self.kind is CredentialKind.ACCESS_TOKEN:
            material = self.secret.reveal()
        else:
            material = self.identity
        digest = hashlib.sha256(f"{self.kind.value}:{material}".encode()).hexdigest()
        return digest[:16]


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = DEFAULT_REDIS_URL
    bitbucket_api_url: str = DEFAULT_API_URL
    workspaces: tuple[str, ...] = ()
    credential: Credential = field(
        default_factory=lambda: Credential(kind=CredentialKind.ANONYMOUS)
    )
    webhook_secrets: tuple[Secret, ...] = ()
    allow_unsigned_webhooks: bool = False  # development only; the web process warns
    webhook_max_bytes: int = 512 * 1024
    push_coalesce_seconds: float = 5.0
    requeue_after_seconds: int = 60
    spool_max_entries: int = 50_000  # deliveries kept in Redis while the database is down
    refresh_attempts: int = 5
    api_tokens: tuple[Secret, ...] = ()
    activity_interval_seconds: int = 15 * 60
    activity_share: float = 0.15  # of the hourly window, for scheduled activity reconciliation
    # of the hourly window, for what of it goes to repositories without signs of change (the
    # quiet sweep, a cold backlog); at most the activity share
    activity_sweep_share: float = 0.05
    reconcile_pipelines: bool = True
    health_pipeline_runs: int = 20
    retention_days: int = 90
    change_retention_days: int = 7  # the catalog change feed: older cursors get a 410
    members_interval_seconds: int = 3600
    # of the hourly window, for the scheduled people sync (members and groups first, then as
    # much of the repository-permissions walk as fits; the walk resumes where it stopped)
    people_share: float = 0.03
    quota_warn_percent: int = 80
    sentry_environment: str = "production"
    sentry_release: str = ""
    sentry_traces_sample_rate: float = 0.0
    token_created_on: date | None = None  # when the Bitbucket token was made: rotation reminders
    group_mapping_path: str = ""
    backstage_jwks_url: str = ""
    backstage_issuer: str = ""
    backstage_audience: str = "backstage"  # what Backstage puts in its user tokens
    action_timeout_seconds: float = 10.0  # a Bitbucket call made inside a web request
    catalog_tokens: tuple[Secret, ...] = ()  # empty: /catalog/* is open
    metrics_tokens: tuple[Secret, ...] = ()  # empty: /metrics is open
    status_basic_auth: tuple[tuple[str, Secret], ...] = ()  # empty: the status page is open
    rate_limit_per_hour: int = 1000
    rate_window_seconds: int = 3600
    rate_reserve_percent: int = 20
    raw_rate_limit_per_hour: int = 5000  # raw file content has a window of its own
    rate_limit_floor: int = 100  # an announced X-RateLimit-Limit is never followed below this
    learn_rate_limit: bool = True  # follow X-RateLimit-Limit; off: the configured limits only
    http_timeout_seconds: float = 30.0
    http_max_retries: int = 3
    full_sync_interval_seconds: int = 3600
    run_heartbeat_seconds: int = 15  # a running sync touches its run row this often
    run_stale_seconds: int = 90  # a run silent this long lost its worker: resumed by beat
    rate_limit_probe_seconds: int = 60  # after a 429 without Retry-After, webhook work probes
    sentry_dsn: Secret | None = None
    bitbucket_web_url: str = "https://bitbucket.org"
    catalog_paths: tuple[str, ...] = ("catalog-info.yaml",)
    generate_components: bool = True
    component_type: str = "service"
    component_lifecycle: str = "production"
    component_owner: str = ""  # empty: the Group derived from the Bitbucket project
    change_detection: str = "updated_on"  # or "head": one branch call per repository
    discovery: str = "auto"  # code search when it works, else per-repository probes
    max_delete_share: float = 0.5
    descriptor_max_bytes: int = 256 * 1024
    descriptor_max_documents: int = 50
    descriptor_kinds: tuple[str, ...] = ("Component", "API", "System", "Domain", "Resource")
    port: int = 5000
    log_level: str = "INFO"
    log_format: str = "auto"

    @property
    def api_host(self) -> str:
        """`scheme://host[:port]` of the Bitbucket API: the only place calls may go."""
        parts = urlsplit(self.bitbucket_api_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def raw_rate_reserve(self) -> int:
        return self.raw_rate_limit_per_hour * self.rate_reserve_percent // 100

    @property
    def rate_reserve(self) -> int:
        """Calls per window that only webhook-driven work may spend."""
        return self.rate_limit_per_hour * self.rate_reserve_percent // 100


def normalise_database_url(value: str) -> str:
    """Accept Heroku-style `postgres://` and plain `postgresql://`; use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if value.startswith(prefix):
            return "postgresql+psycopg://" + value[len(prefix) :]
    return value


def _credential(env: Mapping[str, str]) -> Credential:
    """Exactly one kind of credential, or none (anonymous)."""
    token = env.get("BITBUCKET_ACCESS_TOKEN", "")
    email, api_token = env.get("BITBUCKET_EMAIL", ""), env.get("BITBUCKET_API_TOKEN", "")
    client_id = env.get("BITBUCKET_OAUTH_CLIENT_ID", "")
    client_secret = env.get("BITBUCKET_OAUTH_CLIENT_SECRET", "")
    kinds = [
        name
        for name, present in (
            ("BITBUCKET_ACCESS_TOKEN", bool(token)),
            ("BITBUCKET_EMAIL/BITBUCKET_API_TOKEN", bool(email or api_token)),
            (
                "BITBUCKET_OAUTH_CLIENT_ID/BITBUCKET_OAUTH_CLIENT_SECRET",
                bool(client_id or client_secret),
            ),
        )
        if present
    ]
    if len(kinds) > 1:
        raise SettingsError(
            f"{kinds[0]}: only one kind of Bitbucket credential may be set, also found {kinds[1]}"
        )
    if token:
        return Credential(CredentialKind.ACCESS_TOKEN, secret=Secret(token))
    if email or api_token:
        if not email:
            raise SettingsError("BITBUCKET_EMAIL: required with BITBUCKET_API_TOKEN")
        if not api_token:
            raise SettingsError("BITBUCKET_API_TOKEN: required with BITBUCKET_EMAIL")
        if "@" not in email:
            raise SettingsError("BITBUCKET_EMAIL: must be the Atlassian account email address")
        return Credential(CredentialKind.API_TOKEN, identity=email, secret=Secret(api_token))
    if client_id or client_secret:
        if not client_id:
            raise SettingsError("BITBUCKET_OAUTH_CLIENT_ID: required with the client secret")
        if not client_secret:
            raise SettingsError("BITBUCKET_OAUTH_CLIENT_SECRET: required with the client id")
        token_url = url(
            "BITBUCKET_OAUTH_TOKEN_URL",
            env.get("BITBUCKET_OAUTH_TOKEN_URL") or DEFAULT_OAUTH_TOKEN_URL,
            ("https", "http"),
        )
        return Credential(
            CredentialKind.OAUTH,
            identity=client_id,
            secret=Secret(client_secret),
            token_url=token_url,
        )
    return Credential(CredentialKind.ANONYMOUS)


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Build and validate settings from a mapping of environment variables."""

    def get(name: str, default: str = "") -> str:
        return env.get(name, "").strip() or default

    url(
        "DATABASE_URL",
        get("DATABASE_URL", DEFAULT_DATABASE_URL),
        DATABASE_SCHEMES,
    )
    database_url = normalise_database_url(get("DATABASE_URL", DEFAULT_DATABASE_URL))
    redis_url = url("REDIS_URL", get("REDIS_URL", DEFAULT_REDIS_URL), ("redis", "rediss"))
    broker_url = url(
        "CELERY_BROKER_URL",
        get("CELERY_BROKER_URL", redis_url),
        ("redis", "rediss", "amqp", "amqps", "pyamqp"),
    )
    api_url = url(
        "BITBUCKET_API_URL", get("BITBUCKET_API_URL", DEFAULT_API_URL), ("https", "http")
    ).rstrip("/")
    workspaces = tuple(w.strip() for w in get("BITBUCKET_WORKSPACES").split(",") if w.strip())
    for workspace in workspaces:
        if "/" in workspace or " " in workspace:
            raise SettingsError(f"BITBUCKET_WORKSPACES: {workspace!r} is not a workspace slug")
    secrets = tuple(
        Secret(s.strip()) for s in get("BITBUCKET_WEBHOOK_SECRET").split(",") if s.strip()
    )
    reserve = whole_number(
        "BITBUCKET_RATE_RESERVE_PERCENT", get("BITBUCKET_RATE_RESERVE_PERCENT", "20"), 0
    )
    if reserve >= 100:
        raise SettingsError(f"BITBUCKET_RATE_RESERVE_PERCENT: must be below 100, got {reserve}")
    heartbeat = whole_number(
        "BBSYNC_RUN_HEARTBEAT_SECONDS", get("BBSYNC_RUN_HEARTBEAT_SECONDS", "15")
    )
    stale = whole_number("BBSYNC_RUN_STALE_SECONDS", get("BBSYNC_RUN_STALE_SECONDS", "90"))
    if stale < 3 * heartbeat:
        raise SettingsError(
            f"BBSYNC_RUN_STALE_SECONDS: must be at least 3 heartbeats "
            f"({3 * heartbeat}s with BBSYNC_RUN_HEARTBEAT_SECONDS={heartbeat}), got {stale}"
        )
    log_format = get("LOG_FORMAT", "auto").lower()
    if log_format not in ("auto", "json", "text"):
        raise SettingsError(f"LOG_FORMAT: must be auto, json or text, got {log_format!r}")
    sentry_dsn = get("SENTRY_DSN")
    if sentry_dsn:
        url("SENTRY_DSN", sentry_dsn, ("https", "http"))
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        broker_url=broker_url,
        bitbucket_api_url=api_url,
        workspaces=workspaces,
        credential=_credential(env),
        webhook_secrets=secrets,
        api_tokens=tuple(
            Secret(t.strip()) for t in get("BBSYNC_API_TOKENS").split(",") if t.strip()
        ),
        activity_interval_seconds=whole_number(
            "BBSYNC_ACTIVITY_INTERVAL", get("BBSYNC_ACTIVITY_INTERVAL", str(15 * 60))
        ),
        activity_share=share("BBSYNC_ACTIVITY_SHARE", get("BBSYNC_ACTIVITY_SHARE", "0.15")),
        activity_sweep_share=share(
            "BBSYNC_ACTIVITY_SWEEP_SHARE", get("BBSYNC_ACTIVITY_SWEEP_SHARE", "0.05")
        ),
        reconcile_pipelines=boolean(
            "BBSYNC_RECONCILE_PIPELINES", get("BBSYNC_RECONCILE_PIPELINES", "true")
        ),
        health_pipeline_runs=whole_number(
            "BBSYNC_HEALTH_PIPELINE_RUNS", get("BBSYNC_HEALTH_PIPELINE_RUNS", "20")
        ),
        retention_days=whole_number("BBSYNC_RETENTION_DAYS", get("BBSYNC_RETENTION_DAYS", "90")),
        change_retention_days=whole_number(
            "BBSYNC_CHANGE_RETENTION_DAYS", get("BBSYNC_CHANGE_RETENTION_DAYS", "7")
        ),
        sentry_environment=get("SENTRY_ENVIRONMENT", "production"),
        sentry_release=get("SENTRY_RELEASE"),
        sentry_traces_sample_rate=rate(
            "SENTRY_TRACES_SAMPLE_RATE", get("SENTRY_TRACES_SAMPLE_RATE", "0")
        ),
        token_created_on=calendar_date("BITBUCKET_TOKEN_CREATED", get("BITBUCKET_TOKEN_CREATED")),
        quota_warn_percent=whole_number(
            "BBSYNC_QUOTA_WARN_PERCENT", get("BBSYNC_QUOTA_WARN_PERCENT", "80")
        ),
        members_interval_seconds=whole_number(
            "BBSYNC_MEMBERS_INTERVAL", get("BBSYNC_MEMBERS_INTERVAL", "3600")
        ),
        people_share=share("BBSYNC_PEOPLE_SHARE", get("BBSYNC_PEOPLE_SHARE", "0.03")),
        group_mapping_path=mapping_path(get("BBSYNC_GROUP_MAPPING")),
        **endpoint_access(get),
        allow_unsigned_webhooks=boolean(
            "BBSYNC_ALLOW_UNSIGNED_WEBHOOKS", get("BBSYNC_ALLOW_UNSIGNED_WEBHOOKS", "false")
        ),
        webhook_max_bytes=whole_number(
            "BBSYNC_WEBHOOK_MAX_BYTES", get("BBSYNC_WEBHOOK_MAX_BYTES", str(512 * 1024))
        ),
        push_coalesce_seconds=positive_number(
            "BBSYNC_PUSH_COALESCE_SECONDS", get("BBSYNC_PUSH_COALESCE_SECONDS", "5")
        ),
        requeue_after_seconds=whole_number(
            "BBSYNC_REQUEUE_AFTER_SECONDS", get("BBSYNC_REQUEUE_AFTER_SECONDS", "60")
        ),
        spool_max_entries=whole_number(
            "BBSYNC_SPOOL_MAX_ENTRIES", get("BBSYNC_SPOOL_MAX_ENTRIES", "50000"), minimum=0
        ),
        refresh_attempts=whole_number(
            "BBSYNC_REFRESH_ATTEMPTS", get("BBSYNC_REFRESH_ATTEMPTS", "5")
        ),
        rate_limit_per_hour=whole_number(
            "BITBUCKET_RATE_LIMIT_PER_HOUR", get("BITBUCKET_RATE_LIMIT_PER_HOUR", "1000")
        ),
        rate_window_seconds=whole_number(
            "BITBUCKET_RATE_WINDOW_SECONDS", get("BITBUCKET_RATE_WINDOW_SECONDS", "3600")
        ),
        rate_reserve_percent=reserve,
        raw_rate_limit_per_hour=whole_number(
            "BITBUCKET_RAW_RATE_LIMIT_PER_HOUR", get("BITBUCKET_RAW_RATE_LIMIT_PER_HOUR", "5000")
        ),
        rate_limit_floor=whole_number(
            "BITBUCKET_RATE_LIMIT_FLOOR", get("BITBUCKET_RATE_LIMIT_FLOOR", "100")
        ),
        learn_rate_limit=boolean(
            "BITBUCKET_LEARN_RATE_LIMIT", get("BITBUCKET_LEARN_RATE_LIMIT", "true")
        ),
        http_timeout_seconds=positive_number(
            "BITBUCKET_HTTP_TIMEOUT", get("BITBUCKET_HTTP_TIMEOUT", "30")
        ),
        http_max_retries=whole_number(
            "BITBUCKET_HTTP_RETRIES", get("BITBUCKET_HTTP_RETRIES", "3"), 0
        ),
        full_sync_interval_seconds=whole_number(
            "BBSYNC_FULL_SYNC_INTERVAL", get("BBSYNC_FULL_SYNC_INTERVAL", "3600")
        ),
        run_heartbeat_seconds=heartbeat,
        run_stale_seconds=stale,
        rate_limit_probe_seconds=whole_number(
            "BITBUCKET_429_PROBE_SECONDS", get("BITBUCKET_429_PROBE_SECONDS", "60")
        ),
        sentry_dsn=Secret(sentry_dsn) if sentry_dsn else None,
        bitbucket_web_url=url(
            "BITBUCKET_WEB_URL",
            get("BITBUCKET_WEB_URL", "https://bitbucket.org"),
            ("https", "http"),
        ).rstrip("/"),
        catalog_paths=catalog_paths(get("BBSYNC_CATALOG_PATHS", "catalog-info.yaml")),
        generate_components=boolean(
            "BBSYNC_GENERATE_COMPONENTS", get("BBSYNC_GENERATE_COMPONENTS", "true")
        ),
        component_type=get("BBSYNC_COMPONENT_TYPE", "service"),
        component_lifecycle=get("BBSYNC_COMPONENT_LIFECYCLE", "production"),
        component_owner=get("BBSYNC_COMPONENT_OWNER"),
        change_detection=choice(
            "BBSYNC_CHANGE_DETECTION",
            get("BBSYNC_CHANGE_DETECTION", "updated_on"),
            ("updated_on", "head"),
        ),
        discovery=choice(
            "BBSYNC_DISCOVERY", get("BBSYNC_DISCOVERY", "auto"), ("auto", "search", "probe")
        ),
        max_delete_share=share("BBSYNC_MAX_DELETE_SHARE", get("BBSYNC_MAX_DELETE_SHARE", "0.5")),
        descriptor_max_bytes=whole_number(
            "BBSYNC_DESCRIPTOR_MAX_BYTES", get("BBSYNC_DESCRIPTOR_MAX_BYTES", str(256 * 1024))
        ),
        descriptor_max_documents=whole_number(
            "BBSYNC_DESCRIPTOR_MAX_DOCUMENTS", get("BBSYNC_DESCRIPTOR_MAX_DOCUMENTS", "50")
        ),
        descriptor_kinds=descriptor_kinds(
            get("BBSYNC_DESCRIPTOR_KINDS", "Component,API,System,Domain,Resource")
        ),
        port=whole_number("PORT", get("PORT", "5000")),
        log_level=get("LOG_LEVEL", "INFO").upper(),
        log_format=log_format,
    )


CREDENTIAL_VARIABLES = (
    "BITBUCKET_ACCESS_TOKEN",
    "BITBUCKET_API_TOKEN",
    "BITBUCKET_OAUTH_CLIENT_ID",
)
DEMO_ENV_FILE = ".env.demo"


def _file_values(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Settings from `.env` (if present) overlaid by the real environment, which wins.

    `make run`'s demo writes its settings to `.env.demo` beside `.env` while it runs, so that
    `bbsync status` in another shell sees the demo. They only fill what is unset, and only when
    no Bitbucket credential is configured: a real credential never meets the demo's URL.
    """
    values: dict[str, str] = {}
    if env_file:
        values.update(_file_values(Path(env_file)))
    values.update(os.environ)
    if env_file and not any(values.get(name, "").strip() for name in CREDENTIAL_VARIABLES):
        values = {**_file_values(Path(env_file).with_name(DEMO_ENV_FILE)), **values}
    return settings_from_env(values)
