"""The Bitbucket Cloud REST API 2.0 client: every call bbsync makes to Bitbucket goes here.

Each call first takes a slot from the shared `RateBudget`, is counted by endpoint family,
and goes only to the configured API base URL: a `next` link or any URL on another host (or
outside the API path) is refused before credentials are attached.

Retries are urllib3's `Retry`, mounted on the session's adapter: connection errors, read
errors and 502/503/504 answers of reads (GET, HEAD) are retried `max_retries` times with
exponential backoff and jitter. A call that changes something (POST, PUT, PATCH, DELETE) is
sent once unless its caller says a repeat is harmless, because a lost answer does not mean
nothing happened (a retried POST could start a pipeline twice). Every attempt, retries
included, takes its own slot of the budget and is counted: `_BudgetedRetry` hands each retry
to the call under way. `Retry` never sees a 429: that one pauses the whole budget, for every
process (bbsync's own), and the call fails with `RateLimited`. A 4xx fails at once with an
error naming the endpoint and the status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from marshmallow import ValidationError
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse
from urllib3.connectionpool import ConnectionPool
from urllib3.util.retry import Retry

from app.bitbucket.accounting import CallLedger, endpoint_family
from app.bitbucket.auth import TokenSource
from app.bitbucket.budget import Priority, RateBudget, Resource, resource_for
from app.bitbucket.errors import (
    BitbucketError,
    BitbucketRequestError,
    BitbucketUnavailable,
    CredentialError,
    ForeignHostError,
    NoAnswer,
    NotFound,
    RateLimited,
)
from app.bitbucket.quota import QuotaWatch
from app.bitbucket.schemas import PageSchema
from app.config import CredentialKind

log = logging.getLogger(__name__)

MAX_PAGELEN = 100
MAX_PULLREQUEST_PAGELEN = 50  # Bitbucket rejects more on pull request lists
USER_AGENT = "bbsync/0.1 (+https://github.com/bbsync)"
# Methods whose repetition changes nothing: the only ones retried unless a caller says so.
RETRIED_METHODS = frozenset({"GET", "HEAD"})
# Answers that say "try again" without having done anything. Never 429: that is the budget's.
RETRIED_STATUSES = frozenset({502, 503, 504})

_page_schema = PageSchema()


def api_path(*segments: str) -> str:
    """Join path segments for the API, escaping each (UUIDs with braces, file paths)."""
    return "/".join(quote(s, safe="") for s in segments)


def file_path(workspace: str, slug: str, ref: str, path: str) -> str:
    """The `src` path of a file at a commit or branch (the file path keeps its slashes)."""
    return f"{api_path('repositories', workspace, slug, 'src', ref)}/{quote(path.lstrip('/'))}"


@dataclass(frozen=True)
class RawFile:
    """A file's bytes from `src/`, or `not_modified` when our ETag still matched."""

    content: bytes | None
    etag: str | None
    not_modified: bool = False


@dataclass(frozen=True)
class Page:
    values: list[dict[str, Any]]
    next_url: str | None
    size: int | None


@dataclass
class _Call:
    """One logical call under way: what its retries are charged to and counted as."""

    client: BitbucketClient
    budget: RateBudget
    family: str
    endpoint: str
    retried: bool  # may it be repeated at all
    attempts: int = 0
    probe: bool = False  # the budget let this attempt through a pause as a probe


_CALL: ContextVar[_Call | None] = ContextVar("bitbucket_call", default=None)


class _BudgetedRetry(Retry):
    """urllib3's `Retry`, with every retry charged to bbsync's budget like a first attempt.

    The call under way (`_CALL`, set around each request) decides whether it may be repeated
    at all: reads may, a call that changes something only when its caller said so. A failed
    attempt that is retried is counted here (an attempt that is not retried is the call's
    outcome, counted by the client), and each retry takes its slot after the backoff sleep.
    """

    def _is_method_retryable(self, method: str) -> bool:
        call = _CALL.get()
        return call.retried if call is not None else super()._is_method_retryable(method)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> _BudgetedRetry:
        call = _CALL.get()
        # A call sent once is never repeated, not even after a connection error: a web
        # request acting for a user must answer within its time.
        policy = self if call is None or call.retried else self.new(total=0)
        following = Retry.increment(policy, method, url, response, error, _pool, _stacktrace)
        if call is not None:
            status = response.status if response is not None else None
            reason = f"HTTP {status}" if status else type(error).__name__
            call.client._answered(call, status, response.headers if response is not None else None)
            log.info(
                "bitbucket call failed; retrying",
                extra={"endpoint": call.endpoint, "reason": reason, "attempt": call.attempts},
            )
        return following

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        super().sleep(response)
        call = _CALL.get()
        if call is not None:
            call.client._take_slot(call)


class BitbucketClient:
    """Talks to one Bitbucket API base with one credential, under the shared budget."""

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
        backoff_cap: float = 8.0,
        http: requests.Session | None = None,
        quota: QuotaWatch | None = None,
        raw_budget: RateBudget | None = None,
        learn_limits: bool = True,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        base = urlsplit(self.api_url)
        self._base_scheme = base.scheme.lower()
        self._base_netloc = base.netloc.lower()
        self._base_path = base.path.rstrip("/")
        # Bitbucket keeps a few 1.0 endpoints (groups) beside 2.0 on the same host.
        self._v1_path = self._base_path[:-4] + "/1.0" if self._base_path.endswith("/2.0") else None
        self.tokens = tokens
        self.budget = budget
        self.raw_budget = raw_budget or budget
        self.learn_limits = learn_limits
        self.ledger = ledger or CallLedger()
        self.priority = Priority(priority)
        self.timeout = timeout
        self.quota = quota
        self.http = http or requests.Session()
        self.http.headers["User-Agent"] = USER_AGENT
        # Never pick up credentials from ~/.netrc or proxies' env for another host.
        self.http.trust_env = False
        self._adapter = HTTPAdapter()
        for prefix in ("https://", "http://"):
            self.http.mount(prefix, self._adapter)
        self._max_retries = max_retries
        self._backoff = (backoff_base, backoff_cap)
        self._mount_retries()

    # -- retries ------------------------------------------------------------------------

    def _mount_retries(self) -> None:
        base, cap = self._backoff
        self._adapter.max_retries = _BudgetedRetry(
            total=self._max_retries,
            allowed_methods=RETRIED_METHODS,
            status_forcelist=RETRIED_STATUSES,
            backoff_factor=base,
            backoff_max=cap,
            backoff_jitter=base,
            respect_retry_after_header=False,  # a Retry-After is the budget's, never a sleep
            raise_on_status=False,  # the last 5xx answer is the call's outcome
            redirect=False,  # never followed: only the API host is called
        )

    @property
    def retry(self) -> Retry:
        """The retry policy mounted on the session (urllib3's `Retry`)."""
        policy = self._adapter.max_retries
        assert isinstance(policy, Retry)
        return policy

    @property
    def max_retries(self) -> int:
        return self._max_retries

    @property
    def backoff_base(self) -> float:
        return self._backoff[0]

    @backoff_base.setter
    def backoff_base(self, seconds: float) -> None:
        self._backoff = (seconds, self._backoff[1])
        self._mount_retries()

    @property
    def backoff_cap(self) -> float:
        return self._backoff[1]

    @backoff_cap.setter
    def backoff_cap(self, seconds: float) -> None:
        self._backoff = (self._backoff[0], seconds)
        self._mount_retries()

    # -- URLs ---------------------------------------------------------------------------

    def resolve(self, path_or_url: str) -> tuple[str, str]:
        """`(absolute URL, path relative to the API base)`; refuses anything off the API."""
        if "://" not in path_or_url:
            relative = path_or_url.lstrip("/")
            return f"{self.api_url}/{relative}", relative
        parts = urlsplit(path_or_url)
        same_origin = (
            parts.scheme.lower() == self._base_scheme
            and parts.netloc.lower() == self._base_netloc
            and not parts.username
        )
        inside_api = parts.path == self._base_path or parts.path.startswith(self._base_path + "/")
        if same_origin and self._v1_path and parts.path.startswith(self._v1_path + "/"):
            return path_or_url, parts.path[len(self._v1_path) :].lstrip("/")
        if not (same_origin and inside_api):
            raise ForeignHostError(
                f"refused to call {parts.scheme}://{parts.hostname}{parts.path}: "
                f"only {self.api_url} is allowed (BITBUCKET_API_URL)",
                endpoint=parts.path,
            )
        relative = parts.path[len(self._base_path) :].lstrip("/")
        return path_or_url, relative

    def v1_url(self, path: str) -> str:
        """The URL of a Bitbucket 1.0 endpoint on the configured host (e.g. `groups/{ws}`)."""
        if self._v1_path is None:
            raise ForeignHostError(
                f"no 1.0 API beside {self.api_url} (BITBUCKET_API_URL must end in /2.0)",
                endpoint=path,
            )
        return f"{self._base_scheme}://{self._base_netloc}{self._v1_path}/{path.lstrip('/')}"

    # -- calls --------------------------------------------------------------------------

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
        """One logical call; returns a response in `ok`.

        Reads are retried (by the mounted `Retry`) on 502/503/504, connection and read errors;
        other methods only with `retry=True` (a PUT of a whole object, say). A call sent once
        that gets no answer raises `NoAnswer`: it may have taken effect.
        """
        url, relative = self.resolve(path_or_url)
        retried = method.upper() in RETRIED_METHODS if retry is None else retry
        family = endpoint_family(relative)
        endpoint = f"{method} {relative.split('?', 1)[0]}"
        budget = self.raw_budget if resource_for(relative) is Resource.RAW else self.budget
        renewed_token = False
        while True:
            call = _Call(self, budget, family, endpoint, retried)
            self._take_slot(call)
            send_headers = dict(headers or {})
            authorization = self.tokens.authorization()
            if authorization:
                send_headers["Authorization"] = authorization
            current = _CALL.set(call)
            try:
                response = self.http.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=send_headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                self.ledger.record(family, None)
                if not retried and not isinstance(exc, requests.ConnectTimeout):
                    raise NoAnswer(
                        f"{endpoint}: no answer within {self.timeout:g}s "
                        f"({type(exc).__name__}); it may have taken effect, not retried",
                        endpoint=endpoint,
                        retry_after=None,
                    ) from None
                raise BitbucketUnavailable(
                    f"{endpoint}: no answer after {call.attempts} attempts ({type(exc).__name__})",
                    endpoint=endpoint,
                    retry_after=None,
                ) from None
            finally:
                _CALL.reset(current)
            status = response.status_code
            self._answered(call, status, response.headers)
            if status in ok:
                return response
            if status == 429:
                paused = budget.pause(_retry_after(response))
                if self.quota is not None:
                    self.quota.rate_limited(endpoint, paused)
                log.warning(
                    "bitbucket rate limit hit; budget paused",
                    extra={"endpoint": endpoint, "pause_seconds": round(paused)},
                )
                raise RateLimited(
                    f"{endpoint}: HTTP 429 rate limit exceeded; every process paused "
                    f"for {paused:.0f}s",
                    endpoint=endpoint,
                    status=429,
                    retry_after=paused,
                )
            if status >= 500:
                raise BitbucketUnavailable(
                    f"{endpoint}: HTTP {status} after {call.attempts} attempts"
                    + ("" if retried else " (not retried: it may have taken effect)"),
                    endpoint=endpoint,
                    status=status,
                )
            if (
                status == 401
                and self.tokens.credential.kind is CredentialKind.OAUTH
                and not renewed_token
            ):
                # The shared token may have been revoked early: ask for a new one, once.
                self.tokens.invalidate()
                renewed_token = True
                continue
            raise _request_error(endpoint, response)

    def _take_slot(self, call: _Call) -> None:
        """Before each attempt, the first and every retry: a slot of the shared budget."""
        call.probe = call.budget.acquire(self.priority)
        call.attempts += 1

    def _answered(self, call: _Call, status: int | None, headers: Mapping[str, str] | None) -> None:
        """After each attempt: counted, an announced limit followed, the quota watched."""
        self.ledger.record(call.family, status)
        if status is None or headers is None:
            return
        self._follow_announced_limit(call.budget, call.endpoint, headers)
        if call.probe and status != 429:
            call.budget.answered()  # Bitbucket answers again: webhook work resumes
        if self.quota is not None:
            self.quota.after_call()

    def _follow_announced_limit(
        self, budget: RateBudget, endpoint: str, headers: Mapping[str, str]
    ) -> None:
        """`X-RateLimit-Limit` (access tokens, some endpoints) sets the window's limit for every
        process; `X-RateLimit-NearLimit` is Bitbucket's own quota alert."""
        announced = headers.get("X-RateLimit-Limit", "").strip()
        if self.learn_limits and announced.isdigit() and len(announced) <= 9:
            budget.learn(int(announced))
        near = headers.get("X-RateLimit-NearLimit", "").strip().lower()
        if near == "true" and self.quota is not None:
            self.quota.announced_near_limit(budget, endpoint)

    def get_json(
        self, path_or_url: str, params: Mapping[str, Any] | list[tuple[str, Any]] | None = None
    ) -> dict[str, Any]:
        response = self.request("GET", path_or_url, params=params)
        return _json_object(response, path_or_url)

    def get_json_list(self, path_or_url: str) -> list[Any]:
        """A JSON array answer (a few 1.0 endpoints answer lists, not pages)."""
        response = self.request("GET", path_or_url)
        try:
            body = response.json()
        except ValueError:
            raise BitbucketError(
                f"{path_or_url}: answer is not JSON", endpoint=path_or_url
            ) from None
        if not isinstance(body, list):
            raise BitbucketError(f"{path_or_url}: answer is not a JSON list", endpoint=path_or_url)
        return body

    def post_json(self, path: str, body: Any, ok: tuple[int, ...] = (200, 201)) -> dict[str, Any]:
        response = self.request("POST", path, json=body, ok=ok)
        return _json_object(response, path)

    def iter_pages(
        self,
        path_or_url: str,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        *,
        pagelen: int = MAX_PAGELEN,
    ) -> Iterator[Page]:
        """Pages of a list endpoint, following `next` until absent.

        `path_or_url` may be a `next` link saved earlier, to resume an interrupted walk.
        Page URLs are never built by hand: Bitbucket uses opaque cursors on some lists.
        """
        url: str | None = path_or_url
        first_params: list[tuple[str, Any]] | None = None
        if "://" not in path_or_url:
            _, relative = self.resolve(path_or_url)
            cap = (
                MAX_PULLREQUEST_PAGELEN
                if endpoint_family(relative) == "pullrequests"
                else MAX_PAGELEN
            )
            items = list(params.items()) if isinstance(params, Mapping) else list(params or [])
            items = [(k, v) for k, v in items if k != "pagelen"]
            first_params = [*items, ("pagelen", min(pagelen, cap))]
        while url:
            body = self.get_json(url, first_params)
            first_params = None  # `next` carries every parameter from here on
            try:
                envelope = _page_schema.load(body)
            except ValidationError as exc:
                raise BitbucketError(
                    f"GET {url}: not a paginated list ({exc.messages})", endpoint=url
                ) from None
            page = Page(envelope["values"], envelope.get("next"), envelope.get("size"))
            yield page
            url = page.next_url

    def paginate(
        self,
        path: str,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        *,
        pagelen: int = MAX_PAGELEN,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, across pages."""
        for page in self.iter_pages(path, params, pagelen=pagelen):
            yield from page.values

    def get_file(self, path: str, etag: str | None = None) -> RawFile | None:
        """Raw file bytes from a `src/` path; None when the file does not exist.

        With `etag`, a 304 means unchanged (`not_modified`): it still costs a call.
        """
        headers = {"If-None-Match": etag} if etag else None
        try:
            response = self.request("GET", path, headers=headers, ok=(200, 304))
        except NotFound:
            return None
        if response.status_code == 304:
            return RawFile(content=None, etag=etag, not_modified=True)
        return RawFile(content=response.content, etag=response.headers.get("ETag"))


def _json_object(response: requests.Response, where: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise BitbucketError(f"{where}: answer is not JSON", endpoint=where) from None
    if not isinstance(body, dict):
        raise BitbucketError(f"{where}: answer is not a JSON object", endpoint=where)
    return body


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    text = message or response.text or response.reason or ""
    return " ".join(str(text).split())[:200]


def _request_error(endpoint: str, response: requests.Response) -> BitbucketRequestError:
    status = response.status_code
    detail = _error_message(response)
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        what = "credential refused" if status == 401 else "credential lacks permission or scope"
        return CredentialError(
            f"{endpoint}: HTTP {status}, {what}{suffix}", endpoint=endpoint, status=status
        )
    if status == 404:
        return NotFound(f"{endpoint}: HTTP 404 not found{suffix}", endpoint=endpoint, status=404)
    if 300 <= status < 400:
        return BitbucketRequestError(
            f"{endpoint}: HTTP {status} redirect not followed (only the API host is called)",
            endpoint=endpoint,
            status=status,
        )
    return BitbucketRequestError(
        f"{endpoint}: HTTP {status}{suffix}", endpoint=endpoint, status=status
    )
