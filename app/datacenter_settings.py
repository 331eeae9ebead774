"""Settings of a Bitbucket Data Center source, read from the environment beside Cloud's.

A Data Center source exists when `BITBUCKET_DC_URL` is set. Its credential is an HTTP access
token sent as Bearer (`BITBUCKET_DC_TOKEN`), or a personal access token sent as Basic with its
user (`BITBUCKET_DC_USERNAME` + `BITBUCKET_DC_TOKEN`). Data Center has no hourly window: its
own rate limiting (when an admin turns it on) is a per-user token bucket, so bbsync keeps one
of its own, shared by every process, at `BITBUCKET_DC_RATE_PER_SECOND` with room for
`BITBUCKET_DC_BURST` calls at once. As for Cloud, an invalid value raises `SettingsError` with
one line naming the variable, and the token is a `Secret` that never shows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import marshmallow as ma

from app.settings_fields import PositiveNumber, Secret, SettingsError, Url, WholeNumber

# Atlassian's default when an admin turns rate limiting on: 60 tokens, refilled at 5 a second.
DEFAULT_RATE_PER_SECOND = 5.0
DEFAULT_BURST = 60
REST_API_PATH = "/rest/api/latest"
# Project keys: a letter or underscore first, then letters, digits and underscores.
PROJECT_KEY = re.compile(r"^[A-Za-z_~][A-Za-z0-9_]*$")
VARIABLES = (
    "BITBUCKET_DC_URL",
    "BITBUCKET_DC_TOKEN",
    "BITBUCKET_DC_USERNAME",
    "BITBUCKET_DC_PROJECTS",
    "BITBUCKET_DC_RATE_PER_SECOND",
    "BITBUCKET_DC_BURST",
)


@dataclass(frozen=True)
class DataCenterSettings:
    """One Bitbucket Data Center instance and the credential bbsync uses on it."""

    url: str  # the server's base URL, context path included: https://host[/bitbucket]
    token: Secret | None = None  # None: anonymous (public repositories only)
    username: str = ""  # with the token: Basic username:token (a personal access token)
    projects: tuple[str, ...] = ()  # project keys, upper case; empty: every visible project
    rate_per_second: float = DEFAULT_RATE_PER_SECOND
    burst: int = DEFAULT_BURST

    @property
    def api_url(self) -> str:
        """The REST base every call goes under: `{url}/rest/api/latest`."""
        return self.url + REST_API_PATH

    @property
    def host(self) -> str:
        """`host[:port]` of the server, lower case: names this source in identities."""
        return urlsplit(self.url).netloc.lower()

    @property
    def fingerprint(self) -> str:
        """A stable, non-reversible id of (server, credential): keys its shared budget.

        Data Center limits each user, so a personal access token counts per username and an
        HTTP access token (its own bot user) per token.
        """
        if self.username:
            material = f"user:{self.username}"
        elif self.token is not None:
            material = f"token:{self.token.reveal()}"
        else:
            material = "anonymous"
        digest = hashlib.sha256(f"datacenter:{self.host}:{material}".encode()).hexdigest()
        return digest[:16]

    @property
    def credential_label(self) -> str:
        """What `bbsync status` may show about the credential (never the token)."""
        if self.username:
            return f"personal access token of {self.username} (Basic)"
        if self.token is not None:
            return "HTTP access token (Bearer)"
        return "anonymous"


def _project_keys(value: str) -> tuple[str, ...]:
    keys: list[str] = []
    for item in (k.strip() for k in value.split(",")):
        if not item:
            continue
        if not PROJECT_KEY.match(item):
            raise SettingsError(f"BITBUCKET_DC_PROJECTS: {item!r} is not a project key")
        if item.upper() not in keys:
            keys.append(item.upper())  # Data Center matches keys case-insensitively
    return tuple(keys)


def _value(variable: str, field: ma.fields.Field, text: str) -> Any:
    """`text` read as the settings kind `field`, or the one-line `SettingsError`."""
    try:
        return field.deserialize(text)
    except ma.ValidationError as exc:
        messages = exc.messages
        first = messages[0] if isinstance(messages, list) else messages
        raise SettingsError(f"{variable}: {first}") from None


def datacenter_settings_from_env(
    env: Mapping[str, str] | Callable[[str], str],
) -> DataCenterSettings | None:
    """The Data Center source from environment variables (a mapping, or settings' reader
    giving a variable's stripped value, '' when unset); None when `BITBUCKET_DC_URL` is unset
    (and then no other `BITBUCKET_DC_*` variable may be)."""
    text = env if callable(env) else (lambda name: env.get(name, "").strip())

    def get(name: str, default: str = "") -> str:
        return text(name) or default

    base = get("BITBUCKET_DC_URL")
    if not base:
        stray = next((name for name in VARIABLES[1:] if get(name)), None)
        if stray:
            raise SettingsError(f"{stray}: set BITBUCKET_DC_URL too (the Data Center server)")
        return None
    base = _value("BITBUCKET_DC_URL", Url(schemes=("https", "http")), base).rstrip("/")
    parts = urlsplit(base)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise SettingsError(
            "BITBUCKET_DC_URL: give the server's base URL only (no user, query or fragment)"
        )
    if "/rest/" in parts.path + "/":
        raise SettingsError(
            "BITBUCKET_DC_URL: give the server's base URL (e.g. https://bitbucket.example.com), "
            "not its REST path"
        )
    token = get("BITBUCKET_DC_TOKEN")
    username = get("BITBUCKET_DC_USERNAME")
    if username and not token:
        raise SettingsError("BITBUCKET_DC_TOKEN: required with BITBUCKET_DC_USERNAME")
    if ":" in username:
        raise SettingsError("BITBUCKET_DC_USERNAME: must not contain ':'")
    burst = _value(
        "BITBUCKET_DC_BURST", WholeNumber(), get("BITBUCKET_DC_BURST", str(DEFAULT_BURST))
    )
    return DataCenterSettings(
        url=base,
        token=Secret(token) if token else None,
        username=username,
        projects=_project_keys(get("BITBUCKET_DC_PROJECTS")),
        rate_per_second=_value(
            "BITBUCKET_DC_RATE_PER_SECOND",
            PositiveNumber(),
            get("BITBUCKET_DC_RATE_PER_SECOND", str(DEFAULT_RATE_PER_SECOND)),
        ),
        burst=burst,
    )
