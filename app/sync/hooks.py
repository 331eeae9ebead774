"""Installing bbsync's webhook in Bitbucket, idempotently, and telling when it drifted.

One workspace-level hook when the credential may manage them (workspace owner); otherwise one
hook per repository. The hook carries the secret and exactly the events bbsync handles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.bitbucket.client import BitbucketClient, api_path
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
