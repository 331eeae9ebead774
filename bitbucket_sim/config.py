"""Simulator settings: one dataclass shared by the CLI, `SimServer` and `SimProcess`."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

_WINDOW_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_RATE_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*([hms])\s*$")

PAGELEN_OVER_CAP_CHOICES = ("reject", "clamp")
# Which `fields=-…` exclusions spare a field the same request added with `+…` below them:
# "wildcard" (only exclusions with `*`, what Backstage's Bitbucket Cloud provider relies on)
# or "always" (any exclusion; Bitbucket's behaviour for literal ones is unverified).
FIELDS_EXCLUSION_CHOICES = ("wildcard", "always")


@dataclass(frozen=True)
class RateSpec:
    """A rolling-window budget: `limit` calls per `window_seconds`."""

    limit: int
    window_seconds: float

    @classmethod
    def parse(cls, text: str) -> RateSpec:
        """Read `N/h`, `N/m` or `N/s` (a bare `N` means per hour)."""
        stripped = text.strip()
        if stripped.isdigit():
            stripped += "/h"
        match = _RATE_PATTERN.match(stripped)
        if match is None:
            raise ValueError(f"rate limit must look like 1000/h, 60/m or 5/s, got {text!r}")
        limit = int(match.group(1))
        if limit < 1:
            raise ValueError(f"rate limit must be at least 1 call, got {text!r}")
        return cls(limit=limit, window_seconds=_WINDOW_SECONDS[match.group(2)])

    def __str__(self) -> str:
        unit = {3600.0: "h", 60.0: "m", 1.0: "s"}.get(self.window_seconds)
        if unit is None:
            return f"{self.limit}/{self.window_seconds:g}s"
        return f"{self.limit}/{unit}"


@dataclass
class SimConfig:
    """Every option of the simulator; field names match the CLI flags (dashes → underscores).

    Behaviour flags (`retry_after`, `push_updates_updated_on`, `not_modified_costs_call`,
    `code_search`, `groups_api`, `search_repeats_items`, `pagelen_over_cap`,
    `added_fields_survive`, `rate_limit`, `raw_rate_limit`) can also be changed at runtime
    with `POST /_sim/config`.
    """

    workspace: str = "acme"
    repos: int = 50
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    rate_limit: str = "1000/h"
    raw_rate_limit: str = "5000/h"
    retry_after: int | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    access_token: str | None = None
    email: str | None = None
    api_token: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    oauth_expires_in: int = 7200
    push_updates_updated_on: bool = True
    not_modified_costs_call: bool = True
    code_search: bool = True
    groups_api: bool = True
    search_repeats_items: bool = False
    pagelen_over_cap: str = "reject"
    added_fields_survive: str = "wildcard"
    webhook_timeout: float = 10.0
    webhook_retry_delay: float = 0.5
    log_requests: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the first inconsistent option."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.workspace):
            raise ValueError(f"workspace must be a lowercase slug, got {self.workspace!r}")
        if self.repos < 0:
            raise ValueError("repos must be zero or more")
        RateSpec.parse(self.rate_limit)
        RateSpec.parse(self.raw_rate_limit)
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be zero or more seconds")
        if (self.email is None) != (self.api_token is None):
            raise ValueError("email and api_token go together")
        if (self.oauth_client_id is None) != (self.oauth_client_secret is None):
            raise ValueError("oauth_client_id and oauth_client_secret go together")
        if self.webhook_secret is not None and self.webhook_url is None:
            raise ValueError("webhook_secret needs webhook_url")
        if self.oauth_expires_in < 1:
            raise ValueError("oauth_expires_in must be at least 1 second")
        if self.pagelen_over_cap not in PAGELEN_OVER_CAP_CHOICES:
            raise ValueError(f"pagelen_over_cap must be one of {PAGELEN_OVER_CAP_CHOICES}")
        if self.added_fields_survive not in FIELDS_EXCLUSION_CHOICES:
            raise ValueError(f"added_fields_survive must be one of {FIELDS_EXCLUSION_CHOICES}")

    @property
    def credentials_required(self) -> bool:
        """True when any credential flag was given: then every API call must authenticate."""
        return any(
            value is not None for value in (self.access_token, self.email, self.oauth_client_id)
        )

    @property
    def rate_spec(self) -> RateSpec:
        """The budget of the `repositories` resource."""
        return RateSpec.parse(self.rate_limit)

    @property
    def raw_rate_spec(self) -> RateSpec:
        """The budget of the `raw` resource (file contents)."""
        return RateSpec.parse(self.raw_rate_limit)

    def public_view(self) -> dict[str, Any]:
        """The options as JSON, with secrets masked."""
        view = asdict(self)
        for secret in ("webhook_secret", "access_token", "api_token", "oauth_client_secret"):
            if view[secret] is not None:
                view[secret] = "***"
        return view


RUNTIME_FLAGS: dict[str, type] = {
    "retry_after": int,
    "push_updates_updated_on": bool,
    "not_modified_costs_call": bool,
    "code_search": bool,
    "groups_api": bool,
    "search_repeats_items": bool,
    "pagelen_over_cap": str,
    "added_fields_survive": str,
    "rate_limit": str,
    "raw_rate_limit": str,
    "oauth_expires_in": int,
    "webhook_retry_delay": float,
}
