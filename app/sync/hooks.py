"""Installing bbsync's webhook in Bitbucket, idempotently, and telling when it drifted.

One workspace-level hook when the credential may manage them (workspace owner); otherwise one
hook per repository. The hook carries the secret and exactly the events bbsync handles. On
Data Center, one hook per project (`/projects/{KEY}/webhooks`), or per repository where the
server has no project-level hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.datacenter import DataCenterClient, repo_path
from app.bitbucket.datacenter_webhooks import DC_SUBSCRIBED_EVENTS
from app.bitbucket.errors import CredentialError, NotFound
from app.bitbucket.webhooks import HANDLED_EVENTS

DESCRIPTION = "bbsync"


@dataclass
class HookReport:
    scope: str  # "workspace acme" or "repository acme/billing"
    action: str  # created | updated | unchanged | missing | drifted | ok
    detail: str = ""

    def line(self) -> str:
        return f"{self.scope}: {self.action}" + (f" ({self.detail})" if self.detail else "")


def drift(hook: dict[str, Any], url: str | None) -> list[str]:
    """What differs between an installed hook and what bbsync needs."""
    problems = []
    if url and hook.get("url") != url:
        problems.append(f"url is {hook.get('url')}")
    if not hook.get("active", False):
        problems.append("inactive")
    events = set(hook.get("events") or [])
    missing = sorted(set(HANDLED_EVENTS) - events)
    extra = sorted(events - set(HANDLED_EVENTS))
    if missing:
        problems.append(f"missing events {', '.join(missing)}")
    if extra:
        problems.append(f"extra events {', '.join(extra)}")
    if hook.get("secret_set") is False:
        problems.append("no secret")
    return problems


class WebhookInstaller:
    def __init__(self, client: BitbucketClient, secret: str | None) -> None:
        self.client = client
        self.secret = secret

    def _ours(self, hooks_path: str, url: str | None) -> dict[str, Any] | None:
        for hook in self.client.paginate(hooks_path):
            if hook.get("description") == DESCRIPTION or (url and hook.get("url") == url):
                return hook
        return None

    def _body(self, url: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "description": DESCRIPTION,
            "url": url,
            "active": True,
            "events": sorted(HANDLED_EVENTS),
        }
        if self.secret:
            body["secret"] = self.secret
        return body

    def _ensure(self, hooks_path: str, url: str, scope: str) -> HookReport:
        hook = self._ours(hooks_path, url)
        if hook is None:
            self.client.post_json(hooks_path, self._body(url), ok=(200, 201))
            return HookReport(scope, "created")
        problems = drift(hook, url)
        if not problems and hook.get("secret_set") is not None:
            return HookReport(scope, "unchanged")
        uid = str(hook.get("uuid", "")).strip("{}")
        # The whole subscription each time: a repeated PUT changes nothing.
        self.client.request(
            "PUT", f"{hooks_path}/{uid}", json=self._body(url), ok=(200, 201), retry=True
        )
        return HookReport(scope, "updated", ", ".join(problems) or "secret refreshed")

    def install(self, workspace: str, url: str, repositories: list[str]) -> list[HookReport]:
        """The workspace hook, or per-repository hooks when the credential may not manage
        workspace hooks."""
        try:
            return [
                self._ensure(
                    api_path("workspaces", workspace, "hooks"), url, f"workspace {workspace}"
                )
            ]
        except (CredentialError, NotFound):
            pass
        return [
            self._ensure(
                api_path("repositories", workspace, slug, "hooks"),
                url,
                f"repository {workspace}/{slug}",
            )
            for slug in repositories
        ]

    def status(self, workspace: str, url: str | None, repositories: list[str]) -> list[HookReport]:
        try:
            return [
                self._report(
                    api_path("workspaces", workspace, "hooks"), url, f"workspace {workspace}"
                )
            ]
        except (CredentialError, NotFound):
            pass
        return [
            self._report(
                api_path("repositories", workspace, slug, "hooks"),
                url,
                f"repository {workspace}/{slug}",
            )
            for slug in repositories
        ]

    def _report(self, hooks_path: str, url: str | None, scope: str) -> HookReport:
        hook = self._ours(hooks_path, url)
        if hook is None:
            return HookReport(scope, "missing", "run `bbsync webhooks install --url URL`")
        problems = drift(hook, url)
        if problems:
            return HookReport(scope, "drifted", ", ".join(problems))
        return HookReport(scope, "ok", str(hook.get("url")))


def dc_drift(hook: dict[str, Any], url: str | None) -> list[str]:
    """What differs between an installed Data Center hook and what bbsync needs (Data Center
    never shows the secret back, so it cannot drift visibly: install always sends it)."""
    problems = []
    if url and hook.get("url") != url:
        problems.append(f"url is {hook.get('url')}")
    if not hook.get("active", False):
        problems.append("inactive")
    events = set(hook.get("events") or [])
    missing = sorted(set(DC_SUBSCRIBED_EVENTS) - events)
    if missing:
        problems.append(f"missing events {', '.join(missing)}")
    return problems


class DataCenterWebhookInstaller:
    """bbsync's hook on a Data Center project (`/projects/{KEY}/webhooks`), or on each of its
    repositories when the server has no project-level hooks (older servers answer 404) or the
    credential may not manage them. Idempotent: a hook with bbsync's name or the same URL is
    updated in place (one PUT of the whole hook), never duplicated."""

    def __init__(self, client: DataCenterClient, secret: str | None) -> None:
        self.client = client
        self.secret = secret

    def _ours(self, hooks_path: str, url: str | None) -> dict[str, Any] | None:
        for hook in self.client.paginate(hooks_path):
            if isinstance(hook, dict) and (
                hook.get("name") == DESCRIPTION or (url and hook.get("url") == url)
            ):
                return hook
        return None

    def _body(self, url: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": DESCRIPTION,
            "url": url,
            "active": True,
            "events": sorted(DC_SUBSCRIBED_EVENTS),
        }
        if self.secret:
            body["configuration"] = {"secret": self.secret}
        return body

    def _ensure(self, hooks_path: str, url: str, scope: str) -> HookReport:
        hook = self._ours(hooks_path, url)
        if hook is None:
            self.client.request("POST", hooks_path, json=self._body(url), ok=(200, 201))
            return HookReport(scope, "created")
        problems = dc_drift(hook, url)
        # The secret is never shown back: the whole hook goes again, a repeated PUT is a no-op.
        self.client.request(
            "PUT", f"{hooks_path}/{hook['id']}", json=self._body(url), ok=(200, 201), retry=True
        )
        if problems:
            return HookReport(scope, "updated", ", ".join(problems))
        return HookReport(scope, "unchanged", "secret sent again")

    @staticmethod
    def _project_path(project_key: str) -> str:
        return f"projects/{quote(project_key, safe='')}/webhooks"

    def install(self, project_key: str, url: str, repositories: list[str]) -> list[HookReport]:
        try:
            return [self._ensure(self._project_path(project_key), url, f"project {project_key}")]
        except (CredentialError, NotFound):
            pass
        return [
            self._ensure(
                f"{repo_path(project_key, slug)}/webhooks", url, f"repository {project_key}/{slug}"
            )
            for slug in repositories
        ]

    def status(
        self, project_key: str, url: str | None, repositories: list[str]
    ) -> list[HookReport]:
        try:
            return [self._report(self._project_path(project_key), url, f"project {project_key}")]
        except (CredentialError, NotFound):
            pass
        return [
            self._report(
                f"{repo_path(project_key, slug)}/webhooks", url, f"repository {project_key}/{slug}"
            )
            for slug in repositories
        ]

    def _report(self, hooks_path: str, url: str | None, scope: str) -> HookReport:
        hook = self._ours(hooks_path, url)
        if hook is None:
            return HookReport(scope, "missing", "run `bbsync webhooks install --url URL`")
        problems = dc_drift(hook, url)
        if problems:
            return HookReport(scope, "drifted", ", ".join(problems))
        return HookReport(scope, "ok", str(hook.get("url")))
