"""Settings read once from the environment (and a `.env` file), validated at start.

Every process (web, worker, beat, CLI) builds one `Settings` with `load_settings()`. Each
setting is declared once, on `Settings`, with its variable, its default and the kind of value
it takes (a marshmallow field from `app.settings_fields`); environs reads the variables, from
the environment and `.env`, or from any mapping handed to `settings_from_env`. An invalid value
raises `SettingsError` whose message is one line naming the variable and what is wrong; entry
points print it and exit. Secrets are wrapped in `Secret` so they never show in a repr, a log
line or an error message.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import marshmallow as ma
from environs import Env, EnvValidationError

from app.datacenter_settings import DataCenterSettings, datacenter_settings_from_env
from app.settings_fields import (
    KINDS,
    BasicAuth,
    CalendarDate,
    CatalogPaths,
    Choice,
    DatabaseUrl,
    DescriptorKinds,
    Flag,
    MappingFile,
    PositiveNumber,
    Rate,
    Secret,
    Secrets,
    SecretUrl,
    SettingsError,
    Share,
    Slugs,
    Text,
    Upper,
    Url,
    WholeNumber,
    normalise_database_url,
)

__all__ = [
    "Credential",
    "CredentialKind",
    "Secret",
    "Settings",
    "SettingsError",
    "load_settings",
    "normalise_database_url",
    "settings_from_env",
]

DEFAULT_OAUTH_TOKEN_URL = "https://bitbucket.org/site/oauth2/access_token"
WEB_SCHEMES = ("https", "http")

T = TypeVar("T")


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
class _Declared:
    """How one `Settings` field is read: its variable, the kind of value, the kind's options;
    `default_from` names an earlier field whose value is the default (the broker: Redis)."""

    variable: str
    kind: type[ma.fields.Field]
    options: Mapping[str, Any]
    default_from: str = ""


def setting(
    variable: str,
    default: T,
    kind: type[ma.fields.Field] = Text,
    *,
    default_from: str = "",
    **options: Any,
) -> T:
    """A `Settings` field read from `variable`; its default is written here and nowhere else."""
    declared = _Declared(variable, kind, options, default_from)
    return field(default=default, metadata={"setting": declared})


@dataclass(frozen=True)
class Settings:
    database_url: str = setting("DATABASE_URL", "sqlite:///bbsync.db", DatabaseUrl)
    redis_url: str = setting(
        "REDIS_URL", "redis://localhost:6379/0", Url, schemes=("redis", "rediss")
    )
    broker_url: str = setting(
        "CELERY_BROKER_URL",
        "redis://localhost:6379/0",
        Url,
        default_from="redis_url",
        schemes=("redis", "rediss", "amqp", "amqps", "pyamqp"),
    )
    bitbucket_api_url: str = setting(
        "BITBUCKET_API_URL",
        "https://api.bitbucket.org/2.0",
        Url,
        schemes=WEB_SCHEMES,
        strip_slash=True,
    )
    workspaces: tuple[str, ...] = setting("BITBUCKET_WORKSPACES", (), Slugs)
    credential: Credential = field(
        default_factory=lambda: Credential(kind=CredentialKind.ANONYMOUS)
    )
    webhook_secrets: tuple[Secret, ...] = setting("BITBUCKET_WEBHOOK_SECRET", (), Secrets)
    # Development only; the web process warns.
    allow_unsigned_webhooks: bool = setting("BBSYNC_ALLOW_UNSIGNED_WEBHOOKS", False, Flag)
    webhook_max_bytes: int = setting("BBSYNC_WEBHOOK_MAX_BYTES", 512 * 1024, WholeNumber)
    push_coalesce_seconds: float = setting("BBSYNC_PUSH_COALESCE_SECONDS", 5.0, PositiveNumber)
    requeue_after_seconds: int = setting("BBSYNC_REQUEUE_AFTER_SECONDS", 60, WholeNumber)
    # Deliveries kept in Redis while the database is down; 0 turns the spool off.
    spool_max_entries: int = setting("BBSYNC_SPOOL_MAX_ENTRIES", 50_000, WholeNumber, minimum=0)
    refresh_attempts: int = setting("BBSYNC_REFRESH_ATTEMPTS", 5, WholeNumber)
    api_tokens: tuple[Secret, ...] = setting("BBSYNC_API_TOKENS", (), Secrets)
    activity_interval_seconds: int = setting("BBSYNC_ACTIVITY_INTERVAL", 15 * 60, WholeNumber)
    # Of the hourly window, for scheduled activity reconciliation.
    activity_share: float = setting("BBSYNC_ACTIVITY_SHARE", 0.15, Share)
    # Of the hourly window, what activity may spend on repositories without signs of change
    # (the quiet sweep, a cold backlog); at most the activity share.
    activity_sweep_share: float = setting("BBSYNC_ACTIVITY_SWEEP_SHARE", 0.05, Share)
    reconcile_pipelines: bool = setting("BBSYNC_RECONCILE_PIPELINES", True, Flag)
    health_pipeline_runs: int = setting("BBSYNC_HEALTH_PIPELINE_RUNS", 20, WholeNumber)
    retention_days: int = setting("BBSYNC_RETENTION_DAYS", 90, WholeNumber)
    # The catalog change feed: older cursors get a 410.
    change_retention_days: int = setting("BBSYNC_CHANGE_RETENTION_DAYS", 7, WholeNumber)
    members_interval_seconds: int = setting("BBSYNC_MEMBERS_INTERVAL", 3600, WholeNumber)
    # Of the hourly window, for the scheduled people sync (members and groups first, then as
    # much of the repository-permissions walk as fits; the walk resumes where it stopped).
    people_share: float = setting("BBSYNC_PEOPLE_SHARE", 0.03, Share)
    quota_warn_percent: int = setting("BBSYNC_QUOTA_WARN_PERCENT", 80, WholeNumber)
    sentry_environment: str = setting("SENTRY_ENVIRONMENT", "production")
    sentry_release: str = setting("SENTRY_RELEASE", "")
    sentry_traces_sample_rate: float = setting("SENTRY_TRACES_SAMPLE_RATE", 0.0, Rate)
    # When the Bitbucket token was made: rotation reminders.
    token_created_on: date | None = setting("BITBUCKET_TOKEN_CREATED", None, CalendarDate)
    group_mapping_path: str = setting("BBSYNC_GROUP_MAPPING", "", MappingFile)
    # Who may use which endpoint: how Backstage user tokens are verified, how long a call made
    # for a web request may take, and the optional locks on the catalog, metrics and status
    # page (unset: open, as a zero-config demo needs).
    backstage_jwks_url: str = setting("BBSYNC_BACKSTAGE_JWKS_URL", "", Url, schemes=WEB_SCHEMES)
    backstage_issuer: str = setting("BBSYNC_BACKSTAGE_ISSUER", "")
    # What Backstage puts in its user tokens.
    backstage_audience: str = setting("BBSYNC_BACKSTAGE_AUDIENCE", "backstage")
    # A Bitbucket call made inside a web request: connecting and reading each get this long,
    # so twice it stays inside gunicorn's 30 s.
    action_timeout_seconds: float = setting(
        "BBSYNC_ACTION_TIMEOUT_SECONDS",
        10.0,
        PositiveNumber,
        validate=ma.validate.Range(
            max=12,
            error="must be at most 12 (the web process answers within 30 s), got {input:g}",
        ),
    )
    catalog_tokens: tuple[Secret, ...] = setting("BBSYNC_CATALOG_TOKENS", (), Secrets)
    metrics_tokens: tuple[Secret, ...] = setting("BBSYNC_METRICS_TOKEN", (), Secrets)
    status_basic_auth: tuple[tuple[str, Secret], ...] = setting(
        "BBSYNC_STATUS_BASIC_AUTH", (), BasicAuth
    )
    rate_limit_per_hour: int = setting("BITBUCKET_RATE_LIMIT_PER_HOUR", 1000, WholeNumber)
    rate_window_seconds: int = setting("BITBUCKET_RATE_WINDOW_SECONDS", 3600, WholeNumber)
    rate_reserve_percent: int = setting(
        "BITBUCKET_RATE_RESERVE_PERCENT",
        20,
        WholeNumber,
        minimum=0,
        validate=ma.validate.Range(
            max=100, max_inclusive=False, error="must be below 100, got {input}"
        ),
    )
    # Raw file content has a window of its own.
    raw_rate_limit_per_hour: int = setting("BITBUCKET_RAW_RATE_LIMIT_PER_HOUR", 5000, WholeNumber)
    # An announced X-RateLimit-Limit is never followed below this.
    rate_limit_floor: int = setting("BITBUCKET_RATE_LIMIT_FLOOR", 100, WholeNumber)
    # Follow X-RateLimit-Limit; off: the configured limits only.
    learn_rate_limit: bool = setting("BITBUCKET_LEARN_RATE_LIMIT", True, Flag)
    http_timeout_seconds: float = setting("BITBUCKET_HTTP_TIMEOUT", 30.0, PositiveNumber)
    http_max_retries: int = setting("BITBUCKET_HTTP_RETRIES", 3, WholeNumber, minimum=0)
    full_sync_interval_seconds: int = setting("BBSYNC_FULL_SYNC_INTERVAL", 3600, WholeNumber)
    # A running sync touches its run row this often.
    run_heartbeat_seconds: int = setting("BBSYNC_RUN_HEARTBEAT_SECONDS", 15, WholeNumber)
    # A run silent this long lost its worker: resumed by beat (at least 3 heartbeats).
    run_stale_seconds: int = setting("BBSYNC_RUN_STALE_SECONDS", 90, WholeNumber)
    # After a 429 without Retry-After, webhook work probes this often.
    rate_limit_probe_seconds: int = setting("BITBUCKET_429_PROBE_SECONDS", 60, WholeNumber)
    sentry_dsn: Secret | None = setting("SENTRY_DSN", None, SecretUrl, schemes=WEB_SCHEMES)
    bitbucket_web_url: str = setting(
        "BITBUCKET_WEB_URL", "https://bitbucket.org", Url, schemes=WEB_SCHEMES, strip_slash=True
    )
    catalog_paths: tuple[str, ...] = setting(
        "BBSYNC_CATALOG_PATHS", ("catalog-info.yaml",), CatalogPaths
    )
    generate_components: bool = setting("BBSYNC_GENERATE_COMPONENTS", True, Flag)
    component_type: str = setting("BBSYNC_COMPONENT_TYPE", "service")
    component_lifecycle: str = setting("BBSYNC_COMPONENT_LIFECYCLE", "production")
    # Empty: the Group derived from the Bitbucket project.
    component_owner: str = setting("BBSYNC_COMPONENT_OWNER", "")
    # Or "head": one branch call per repository.
    change_detection: str = setting(
        "BBSYNC_CHANGE_DETECTION", "updated_on", Choice, choices=("updated_on", "head")
    )
    # Code search when it works, else per-repository probes.
    discovery: str = setting(
        "BBSYNC_DISCOVERY", "auto", Choice, choices=("auto", "search", "probe")
    )
    max_delete_share: float = setting("BBSYNC_MAX_DELETE_SHARE", 0.5, Share)
    descriptor_max_bytes: int = setting("BBSYNC_DESCRIPTOR_MAX_BYTES", 256 * 1024, WholeNumber)
    descriptor_max_documents: int = setting("BBSYNC_DESCRIPTOR_MAX_DOCUMENTS", 50, WholeNumber)
    descriptor_kinds: tuple[str, ...] = setting(
        "BBSYNC_DESCRIPTOR_KINDS",
        ("Component", "API", "System", "Domain", "Resource"),
        DescriptorKinds,
    )
    port: int = setting("PORT", 5000, WholeNumber)
    log_level: str = setting("LOG_LEVEL", "INFO", Upper)
    log_format: str = setting(
        "LOG_FORMAT",
        "auto",
        Choice,
        choices=("auto", "json", "text"),
        error="must be auto, json or text, got {lowered!r}",
    )

    # A Bitbucket Data Center source, if any (`BITBUCKET_DC_*`, app/datacenter_settings.py).
    datacenter: DataCenterSettings | None = None

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

    def secret_values(self) -> tuple[str, ...]:
        """Every secret these settings hold, revealed: what log lines must never show."""
        found: list[str] = []

        def collect(value: Any) -> None:
            if isinstance(value, Secret):
                found.append(value.reveal())
            elif isinstance(value, tuple):
                for item in value:
                    collect(item)
            elif isinstance(value, Credential):
                collect(value.secret)
            elif isinstance(value, DataCenterSettings):
                collect(value.token)

        for each in fields(self):
            collect(getattr(self, each.name))
        return tuple(dict.fromkeys(v for v in found if v))


class _Reader(Env):
    """environs' reader over a given mapping (the process environment, or a test's dict),
    then the `.env` files read into it; a blank value counts as unset, values are stripped.

    It collects every bad value (`eager=False`) and `settings_error()` turns the first into
    bbsync's one-line `SettingsError`.
    """

    def __init__(self, source: Mapping[str, str]) -> None:
        super().__init__(eager=False)
        self._source = source
        for kind in KINDS:
            self.add_parser_from_field(kind.__name__, kind)

    def _get_value(self, env_key: str, default: Any) -> Any:
        value = self._source.get(env_key)
        if value is None:
            value = self._environ.get(env_key)
        if value is None or not value.strip():
            return default
        return value.strip()

    def text(self, variable: str) -> str:
        """A variable's value as written (stripped), or '' when unset: no kind, no check."""
        value = self._get_value(variable, "")
        return value if isinstance(value, str) else ""

    def read(self, variable: str, kind: type[ma.fields.Field], default: Any, **options: Any) -> Any:
        return getattr(self, kind.__name__)(variable, default, **options)

    def read_file(self, path: Path) -> None:
        """Values of a dotenv file fill what is still unset (the environment always wins)."""
        if path.is_file():
            self.read_env(path, recurse=False)

    def settings_error(self) -> SettingsError | None:
        try:
            self.seal()
        except EnvValidationError as exc:
            found = exc.error_messages
            if not isinstance(found, Mapping):  # never: every value has a variable
                return SettingsError(str(found))
            variable, messages = next(iter(found.items()))
            return SettingsError(f"{variable}: {messages[0]}")
        return None


def _credential(reader: _Reader) -> Credential:
    """Exactly one kind of credential, or none (anonymous)."""
    token = reader.text("BITBUCKET_ACCESS_TOKEN")
    email, api_token = reader.text("BITBUCKET_EMAIL"), reader.text("BITBUCKET_API_TOKEN")
    client_id = reader.text("BITBUCKET_OAUTH_CLIENT_ID")
    client_secret = reader.text("BITBUCKET_OAUTH_CLIENT_SECRET")
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
        token_url = reader.read(
            "BITBUCKET_OAUTH_TOKEN_URL", Url, DEFAULT_OAUTH_TOKEN_URL, schemes=WEB_SCHEMES
        )
        return Credential(
            CredentialKind.OAUTH,
            identity=client_id,
            secret=Secret(client_secret),
            token_url=token_url,
        )
    return Credential(CredentialKind.ANONYMOUS)


def _settings(reader: _Reader) -> Settings:
    """Read every declared setting and the credential, then the rules between settings."""
    values: dict[str, Any] = {}
    for each in fields(Settings):
        declared = each.metadata.get("setting")
        if not isinstance(declared, _Declared):
            continue
        default = values[declared.default_from] if declared.default_from else each.default
        values[each.name] = reader.read(
            declared.variable, declared.kind, default, **declared.options
        )
    credential = _credential(reader)
    datacenter = datacenter_settings_from_env(reader.text)
    error = reader.settings_error()
    if error is not None:
        raise error
    heartbeat, stale = values["run_heartbeat_seconds"], values["run_stale_seconds"]
    if stale < 3 * heartbeat:
        raise SettingsError(
            f"BBSYNC_RUN_STALE_SECONDS: must be at least 3 heartbeats "
            f"({3 * heartbeat}s with BBSYNC_RUN_HEARTBEAT_SECONDS={heartbeat}), got {stale}"
        )
    if values["backstage_jwks_url"] and not values["backstage_issuer"]:
        raise SettingsError(
            "BBSYNC_BACKSTAGE_ISSUER: required with BBSYNC_BACKSTAGE_JWKS_URL "
            "(Backstage's is <backend base URL>/api/auth)"
        )
    return Settings(credential=credential, datacenter=datacenter, **values)


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Build and validate settings from a mapping of environment variables."""
    return _settings(_Reader(env))


CREDENTIAL_VARIABLES = (
    "BITBUCKET_ACCESS_TOKEN",
    "BITBUCKET_API_TOKEN",
    "BITBUCKET_OAUTH_CLIENT_ID",
    "BITBUCKET_DC_URL",  # a Data Center source is real configuration too: no demo overlay
)
DEMO_ENV_FILE = ".env.demo"


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Settings from `.env` (if present) overlaid by the real environment, which wins.

    `make run`'s demo writes its settings to `.env.demo` beside `.env` while it runs, so that
    `bbsync status` in another shell sees the demo. They only fill what is unset, and only when
    no Bitbucket credential is configured: a real credential never meets the demo's URL.
    """
    reader = _Reader(os.environ)
    if env_file:
        reader.read_file(Path(env_file))
        if not any(reader.text(name) for name in CREDENTIAL_VARIABLES):
            reader.read_file(Path(env_file).with_name(DEMO_ENV_FILE))
    return _settings(reader)
