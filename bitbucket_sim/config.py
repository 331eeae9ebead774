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
FLAVORS = ("cloud", "datacenter")
CLOUD_RATE_LIMIT = "1000/h"
RATE_OFF = "off"
DC_DEFAULT_BURST = 60  # the token bucket size Bitbucket Data Center proposes when turned on


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
    flavor: str = "cloud"
    # "" = the flavor's default: 1000/h on Cloud; "off" on Data Center (a token bucket refill
    # rate when given there: N/s, N/m or N/h tokens).
    rate_limit: str = ""
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
    # Data Center only (see bitbucket_sim/README.md, "Data Center").
    burst: int = DC_DEFAULT_BURST
    username: str | None = None
    non_admin_token: str | None = None
    admin_denied_status: int = 401
    admin_reads_need_admin: bool = False
    project_webhooks: bool = True
    legacy_default_branch: bool = True
    merge_fires_refs_changed: bool = True
    raw_etag: bool = False
    repo_default_branch: bool = False
    pr_newest_by: str = "updated"
    needs_work_event: str = "pr:reviewer:needs_work"
    project_modified_event: str = "project:modified"

    def __post_init__(self) -> None:
        if not self.rate_limit:
            self.rate_limit = RATE_OFF if self.flavor == "datacenter" else CLOUD_RATE_LIMIT
        self.validate()

    @property
    def is_datacenter(self) -> bool:
        return self.flavor == "datacenter"

    def validate(self) -> None:
        """Raise `ValueError` naming the first inconsistent option."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.workspace):
            raise ValueError(f"workspace must be a lowercase slug, got {self.workspace!r}")
        if self.repos < 0:
            raise ValueError("repos must be zero or more")
        if self.flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {', '.join(FLAVORS)}, got {self.flavor!r}")
        if not (self.is_datacenter and self.rate_limit == RATE_OFF):
            RateSpec.parse(self.rate_limit)
        if self.burst < 1:
            raise ValueError("burst must be at least 1 token")
        if not self.needs_work_event or not self.project_modified_event:
            raise ValueError("event keys cannot be empty")
        if self.pr_newest_by not in ("updated", "created"):
            raise ValueError("pr_newest_by must be updated or created")
        if self.admin_denied_status not in (401, 403):
            raise ValueError("admin_denied_status must be 401 or 403")
        if self.username is not None and self.api_token is None:
            raise ValueError("username needs api_token (a personal access token)")
        if self.email is not None and self.username is not None:
            raise ValueError("give email (Cloud) or username (Data Center), not both")
        RateSpec.parse(self.raw_rate_limit)
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("retry_after must be zero or more seconds")
        if self.api_token is not None and self.email is None and self.username is None:
            raise ValueError("api_token needs email (Cloud) or username (Data Center)")
        if self.email is not None and self.api_token is None:
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
            value is not None for value in (self.access_token, self.api_token, self.oauth_client_id)
        )

    @property
    def rate_spec(self) -> RateSpec:
        """The budget of the `repositories` resource (Cloud; unused on Data Center)."""
        if self.rate_limit == RATE_OFF:
            return RateSpec.parse(CLOUD_RATE_LIMIT)
        return RateSpec.parse(self.rate_limit)

    @property
    def refill_per_second(self) -> float | None:
        """Data Center: tokens added to each user's bucket per second; None when off."""
        if self.rate_limit == RATE_OFF:
            return None
        spec = RateSpec.parse(self.rate_limit)
        return spec.limit / spec.window_seconds

    @property
    def raw_rate_spec(self) -> RateSpec:
        """The budget of the `raw` resource (file contents)."""
        return RateSpec.parse(self.raw_rate_limit)

    def public_view(self) -> dict[str, Any]:
        """The options as JSON, with secrets masked."""
        view = asdict(self)
        secrets = ("webhook_secret", "access_token", "api_token", "oauth_client_secret")
        for secret in (*secrets, "non_admin_token"):
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
    "burst": int,
    "admin_denied_status": int,
    "admin_reads_need_admin": bool,
    "project_webhooks": bool,
    "legacy_default_branch": bool,
    "merge_fires_refs_changed": bool,
    "raw_etag": bool,
    "repo_default_branch": bool,
    "pr_newest_by": str,
    "needs_work_event": str,
    "project_modified_event": str,
}
