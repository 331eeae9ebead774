"""`bbsync doctor`: the configuration checked end to end, one line per check with a fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.budget import Priority
from app.bitbucket.client import api_path
from app.bitbucket.errors import BitbucketError, CredentialError, NotFound
from app.cli.datacenter import datacenter_checks
from app.ops.credentials_age import token_age_notice
from app.runtime import Runtime
from app.sync.hooks import WebhookInstaller

# What each feature needs, and the token scope that grants it.
FEATURE_PROBES = (
    ("repositories", "read:repository:bitbucket", ("repositories", "{ws}")),
    ("pull requests", "read:pullrequest:bitbucket", None),
    ("members", "read:workspace:bitbucket", ("workspaces", "{ws}", "members")),
    (
        "permissions",
        "admin:workspace:bitbucket (or repository admin)",
        ("workspaces", "{ws}", "permissions", "repositories"),
    ),
    ("webhooks", "webhook:bitbucket", ("workspaces", "{ws}", "hooks")),
)


ALEMBIC_INI = str(Path(__file__).resolve().parents[2] / "alembic.ini")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"
        return text + (f" — fix: {self.fix}" if self.fix and not self.ok else "")


def database_check(rt: Runtime, alembic_ini: str | None = None) -> Check:
    """Whether the database answers and is migrated to the newest revision."""
    alembic_ini = alembic_ini or ALEMBIC_INI
    try:
        head = ScriptDirectory.from_config(Config(alembic_ini)).get_current_head()
        with rt.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        return Check(
            "database",
            False,
            f"unreachable ({type(exc).__name__})",
            "check DATABASE_URL and that the database server runs",
        )
    if current != head:
        return Check(
            "database",
            False,
            f"not migrated (at {current or 'nothing'}, head {head})",
            "run `alembic upgrade head` (the Procfile's release phase)",
        )
    return Check("database", True, f"migrated to {head}")


def run_checks(
    rt: Runtime, alembic_ini: str = ALEMBIC_INI, hook_url: str | None = None
) -> list[Check]:
    settings = rt.settings
    notice = token_age_notice(settings)
    checks = [
        Check(
            "configuration",
            True,
            f"credential {settings.credential.kind.value}, "
            f"workspaces {', '.join(settings.workspaces) or '-'}",
        )
    ]
    if settings.token_created_on is not None:
        checks.append(
            Check(
                "token age",
                notice is None or notice[0] != "alert",
                notice[1] if notice else f"created {settings.token_created_on}",
                "create a new token, set it and BITBUCKET_TOKEN_CREATED",
            )
        )
    try:
        rt.redis.ping()
        checks.append(Check("redis", True, "reachable"))
    except redis.RedisError as exc:
        checks.append(
            Check(
                "redis",
                False,
                f"unreachable ({type(exc).__name__})",
                "start Redis or set REDIS_URL",
            )
        )
        return checks  # every Bitbucket call needs the budget in Redis
    checks.append(database_check(rt, alembic_ini))
    if settings.datacenter is not None:
        checks += [Check(*check) for check in datacenter_checks(rt)]
    if not settings.workspaces:
        if settings.datacenter is None:
            checks.append(Check("workspaces", False, "none configured", "set BITBUCKET_WORKSPACES"))
        return checks
    client = rt.bitbucket(Priority.WEBHOOK)
    for workspace in settings.workspaces:
        try:
            client.get_json(api_path("workspaces", workspace))
            checks.append(Check(f"credential ({workspace})", True, "accepted"))
        except CredentialError as exc:
            checks.append(
                Check(
                    f"credential ({workspace})",
                    False,
                    str(exc),
                    "set a valid token (BITBUCKET_ACCESS_TOKEN, BITBUCKET_API_TOKEN "
                    "or the OAuth consumer) with access to the workspace",
                )
            )
            continue
        except NotFound:
            checks.append(
                Check(
                    f"credential ({workspace})",
                    False,
                    "workspace not found",
                    "check the slug in BITBUCKET_WORKSPACES",
                )
            )
            continue
        except BitbucketError as exc:
            checks.append(
                Check(
                    f"credential ({workspace})",
                    False,
                    str(exc),
                    "check BITBUCKET_API_URL and the network",
                )
            )
            continue
        checks += _scopes(rt, workspace)
        checks.append(_webhook(rt, workspace, hook_url))
    return checks


def _scopes(rt: Runtime, workspace: str) -> list[Check]:
    client = rt.bitbucket(Priority.WEBHOOK)
    checks = []
    first_repo = None
    for feature, scope, segments in FEATURE_PROBES:
        path = None
        if segments is not None:
            path = api_path(*(s.replace("{ws}", workspace) for s in segments))
        elif first_repo is not None:
            path = api_path("repositories", workspace, first_repo, "pullrequests")
        if path is None:
            continue
        try:
            body = client.get_json(path, {"pagelen": 1})
            if feature == "repositories" and body.get("values"):
                first_repo = str(body["values"][0].get("slug") or "") or None
            checks.append(Check(f"{feature} ({workspace})", True, "readable"))
        except CredentialError as exc:
            checks.append(
                Check(
                    f"{feature} ({workspace})",
                    False,
                    f"refused (HTTP {exc.status})",
                    f"give the token the scope {scope}",
                )
            )
        except BitbucketError as exc:
            checks.append(Check(f"{feature} ({workspace})", False, str(exc), "see the error"))
    return checks


def _webhook(rt: Runtime, workspace: str, hook_url: str | None) -> Check:
    try:
        reports = WebhookInstaller(rt.bitbucket(Priority.WEBHOOK), None).status(
            workspace, hook_url, []
        )
    except BitbucketError as exc:
        return Check(f"webhook ({workspace})", False, str(exc), "check the webhook scope")
    bad = [r for r in reports if r.action != "ok"]
    if bad:
        return Check(
            f"webhook ({workspace})",
            False,
            "; ".join(r.line() for r in bad),
            "bbsync webhooks install --url https://<bbsync>/webhooks/bitbucket",
        )
    return Check(f"webhook ({workspace})", True, "installed")
