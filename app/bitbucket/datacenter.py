"""The Bitbucket Data Center REST client (`/rest/api/latest/…`).

It keeps every rule of the Cloud client by making its calls through one (`BitbucketClient`
with the Data Center REST base): each call takes a token from the shared budget first
(`TokenBucketBudget` in Data Center mode), is counted in the call ledger, is retried on 5xx
and connection errors when it is a read, pauses every process on a 429, and goes only to
the configured server: a URL on another host or outside `/rest/api/latest` is refused before
credentials are attached. What differs is Data Center's shape: `start`/`limit` paging until
`isLastPage` (the next page starts exactly at `nextPageStart`, never computed), projects and
repository slugs instead of workspaces, raw files with `at=`, and admin endpoints (users,
groups, permissions) that a non-admin credential is refused, where we degrade with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from marshmallow import EXCLUDE, Schema, ValidationError, fields

from app.bitbucket.accounting import CallLedger
from app.bitbucket.auth import TokenSource
from app.bitbucket.budget import Priority, RateBudget
from app.bitbucket.client import BitbucketClient, RawFile
from app.bitbucket.errors import BitbucketError, CredentialError, ForeignHostError, NotFound
from app.config import Credential, CredentialKind
from app.datacenter_settings import DataCenterSettings

log = logging.getLogger(__name__)

# Data Center serves 25 items a page unless asked, and at most 1,000 (by default): fewer,
# larger pages spend fewer calls. A server configured lower still says where to go on.
PAGE_LIMIT = 1000
PULL_REQUEST_STATES = ("ALL", "OPEN", "MERGED", "DECLINED")


def datacenter_credential(settings: DataCenterSettings) -> Credential:
    """The Cloud credential kinds already carry Data Center's two headers: an HTTP access
    token is Bearer, a personal access token with its username is Basic."""
    if settings.token is None:
        return Credential(CredentialKind.ANONYMOUS)
    if settings.username:
        return Credential(
            CredentialKind.API_TOKEN, identity=settings.username, secret=settings.token
        )
    return Credential(CredentialKind.ACCESS_TOKEN, secret=settings.token)


class _PageSchema(Schema):
    """Data Center's paged envelope `{size, limit, isLastPage, values, start, nextPageStart}`."""

    class Meta:
        unknown = EXCLUDE

    values = fields.List(fields.Raw(), required=True)
    isLastPage = fields.Boolean(required=True)
    start = fields.Integer(load_default=0)
    limit = fields.Integer(load_default=None, allow_none=True)
    size = fields.Integer(load_default=None, allow_none=True)
    nextPageStart = fields.Integer(load_default=None, allow_none=True)


_page_schema = _PageSchema()


@dataclass(frozen=True)
class DataCenterPage:
    values: list[Any]
    start: int
    next_start: int | None  # None on the last page


def repo_path(project_key: str, slug: str, *rest: str) -> str:
    """`projects/{KEY}/repos/{slug}/…`, each segment escaped."""
    segments = ("projects", project_key, "repos", slug, *rest)
    return "/".join(quote(s, safe="") for s in segments)


class DataCenterClient:
    """Talks to one Data Center server with one credential, under the shared budget."""

    def __init__(
        self,
        api_url: str,
        tokens: TokenSource,
        budget: RateBudget,
        ledger: CallLedger | None = None,
        *,
        priority: Priority = Priority.BACKFILL,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        http: requests.Session | None = None,
    ) -> None:
        self.calls = BitbucketClient(
            api_url,
            tokens,
            budget,
            ledger,
            priority=priority,
            timeout=timeout,
            max_retries=max_retries,
            backoff_base=backoff_base,
            http=http,
            learn_limits=False,  # Data Center announces no limit
        )
        self.api_url = self.calls.api_url
        self.ledger = self.calls.ledger
        self.budget = budget
        self.warnings: list[str] = []  # what was skipped for lack of permission, this run

    @classmethod
    def from_settings(
        cls,
        settings: DataCenterSettings,
        budget: RateBudget,
        ledger: CallLedger | None = None,
        **options: Any,
    ) -> DataCenterClient:
        tokens = TokenSource(datacenter_credential(settings))
        return cls(settings.api_url, tokens, budget, ledger, **options)

    # -- calls ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        retry: bool | None = None,
    ) -> requests.Response:
        """One call under the Cloud client's rules (a call that changes something is sent
        once unless `retry`); a refused URL names our setting."""
        try:
            return self.calls.request(
                method, path_or_url, params=params, json=json, headers=headers, ok=ok, retry=retry
            )
        except ForeignHostError as exc:
            where = str(exc).split(": only ", 1)[0]
            raise ForeignHostError(
                f"{where}: only {self.api_url} is allowed (BITBUCKET_DC_URL)",
                endpoint=exc.endpoint,
            ) from None

    def get_json(
        self, path: str, params: Mapping[str, Any] | list[tuple[str, Any]] | None = None
    ) -> dict[str, Any]:
        response = self.request("GET", path, params=params)
        try:
            body = response.json()
        except ValueError:
            raise BitbucketError(f"GET {path}: answer is not JSON", endpoint=path) from None
        if not isinstance(body, dict):
            raise BitbucketError(f"GET {path}: answer is not a JSON object", endpoint=path)
        return body

    def iter_pages(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        limit: int = PAGE_LIMIT,
        start: int = 0,
    ) -> Iterator[DataCenterPage]:
        """Pages of a list, from `start`, until `isLastPage`.

        Each next page starts exactly at the `nextPageStart` the server gave: never at a
        start we compute (a server serving fewer than `limit` items must not lose any), and
        never at one that does not move forward (that would loop).
        """
        base = [(k, v) for k, v in (params or {}).items() if k not in ("start", "limit")]
        while True:
            body = self.get_json(path, [*base, ("start", start), ("limit", limit)])
            try:
                envelope = _page_schema.load(body)
            except ValidationError as exc:
                raise BitbucketError(
                    f"GET {path}: not a paged list ({exc.messages})", endpoint=path
                ) from None
            last = envelope["isLastPage"]
            next_start = envelope["nextPageStart"]
            if not last and (next_start is None or next_start <= start):
                raise BitbucketError(
                    f"GET {path}: page at start={start} is not the last but its "
                    f"nextPageStart is {next_start}",
                    endpoint=path,
                )
            yield DataCenterPage(envelope["values"], start, None if last else next_start)
            if last:
                return
            start = next_start

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, limit: int = PAGE_LIMIT
    ) -> Iterator[Any]:
        """Every item of a list, across pages."""
        for page in self.iter_pages(path, params, limit=limit):
            yield from page.values

    def _degrade(self, what: str, exc: CredentialError) -> None:
        message = f"{what} skipped: the Data Center credential may not read it (HTTP {exc.status})"
        log.warning(message, extra={"endpoint": exc.endpoint, "status": exc.status})
        self.warnings.append(message)

    # -- projects and repositories -------------------------------------------------------

    def projects(self, keys: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
        """The given projects (a missing one is a warning, not an error), or every visible
        project when `keys` is empty."""
        if not keys:
            yield from self.paginate("projects")
            return
        for key in keys:
            try:
                yield self.get_json(f"projects/{quote(key, safe='')}")
            except NotFound:
                message = f"Data Center project {key} not found or not visible"
                log.warning(message, extra={"project": key})
                self.warnings.append(message)

    def repositories(self, project_key: str) -> Iterator[dict[str, Any]]:
        yield from self.paginate(f"projects/{quote(project_key, safe='')}/repos")

    def repository(self, project_key: str, slug: str) -> dict[str, Any]:
        return self.get_json(repo_path(project_key, slug))

    def default_branch(self, project_key: str, slug: str) -> dict[str, Any] | None:
        """The default branch `{id, displayId, latestCommit, …}`; None for an empty
        repository. Older servers only have `/branches/default`."""
        for tail in (("default-branch",), ("branches", "default")):
            try:
                response = self.request("GET", repo_path(project_key, slug, *tail), ok=(200, 204))
            except NotFound:
                continue
            if response.status_code == 204 or not response.content:
                return None
            body = response.json()
            return body if isinstance(body, dict) else None
        return None

    def branches(self, project_key: str, slug: str) -> Iterator[dict[str, Any]]:
        yield from self.paginate(repo_path(project_key, slug, "branches"))

    def tags(self, project_key: str, slug: str) -> Iterator[dict[str, Any]]:
        yield from self.paginate(repo_path(project_key, slug, "tags"))

    def last_commit(
        self, project_key: str, slug: str, ref: str, path: str | None = None
    ) -> dict[str, Any] | None:
        """The newest commit reachable from `ref` (that changed `path`, when given)."""
        params: dict[str, Any] = {"until": ref, "limit": 1}
        if path:
            params["path"] = path
        body = self.get_json(repo_path(project_key, slug, "commits"), params)
        values = body.get("values")
        if isinstance(values, list) and values and isinstance(values[0], dict):
            return values[0]
        return None

    def file(
        self, project_key: str, slug: str, path: str, at: str, etag: str | None = None
    ) -> RawFile | None:
        """A file's bytes at a ref or commit; None when it does not exist there. With `etag`
        (servers that send one), a 304 means unchanged."""
        relative = f"{repo_path(project_key, slug, 'raw')}/{quote(path.lstrip('/'))}"
        headers = {"If-None-Match": etag} if etag else None
        try:
            response = self.request(
                "GET", relative, params={"at": at}, headers=headers, ok=(200, 304)
            )
        except NotFound:
            return None
        if response.status_code == 304:
            return RawFile(content=None, etag=etag, not_modified=True)
        return RawFile(content=response.content, etag=response.headers.get("ETag"))

    # -- activity ------------------------------------------------------------------------

    def pull_requests(
        self, project_key: str, slug: str, state: str = "ALL"
    ) -> Iterator[dict[str, Any]]:
        if state not in PULL_REQUEST_STATES:
            raise ValueError(f"state must be one of {', '.join(PULL_REQUEST_STATES)}")
        yield from self.paginate(
            repo_path(project_key, slug, "pull-requests"), {"state": state, "order": "NEWEST"}
        )

    def build_statuses(self, project_key: str, slug: str, commit: str) -> Iterator[dict[str, Any]]:
        yield from self.paginate(repo_path(project_key, slug, "commits", commit, "builds"))

    # -- people and permissions (degrade when the credential may not read them) -----------

    def users(self) -> list[dict[str, Any]] | None:
        try:
            return list(self.paginate("users"))
        except CredentialError as exc:
            self._degrade("users", exc)
            return None

    def groups(self) -> list[dict[str, Any]] | None:
        """Groups with `name` (admin endpoint; needs LICENSED_USER on most servers)."""
        try:
            return list(self.paginate("admin/groups"))
        except CredentialError as exc:
            self._degrade("groups", exc)
            return None

    def group_members(self, group: str) -> list[dict[str, Any]] | None:
        try:
            return list(self.paginate("admin/groups/more-members", {"context": group}))
        except CredentialError as exc:
            self._degrade(f"members of group {group}", exc)
            return None

    def project_permissions(self, project_key: str, kind: str) -> list[dict[str, Any]] | None:
        """`kind` users or groups: `[{user|group, permission}]`; None when refused."""
        if kind not in ("users", "groups"):
            raise ValueError("kind must be users or groups")
        path = f"projects/{quote(project_key, safe='')}/permissions/{kind}"
        try:
            return list(self.paginate(path))
        except CredentialError as exc:
            self._degrade(f"{kind} permissions of project {project_key}", exc)
            return None

    def repository_permissions(
        self, project_key: str, slug: str, kind: str
    ) -> list[dict[str, Any]] | None:
        if kind not in ("users", "groups"):
            raise ValueError("kind must be users or groups")
        try:
            return list(self.paginate(repo_path(project_key, slug, "permissions", kind)))
        except CredentialError as exc:
            self._degrade(f"{kind} permissions of {project_key}/{slug}", exc)
            return None
