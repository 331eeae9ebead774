"""Bitbucket webhook deliveries: signature, headers and the body schema of each event family.

Only what bbsync reads is required; Bitbucket's other keys pass through unvalidated (they are
stored with the delivery). The repository object inside webhooks has no slug, main branch or
description: those come from the API or the database, never guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from app.bitbucket.schemas import CommitStatusSchema, PullRequestSchema

EVENT_KEY = re.compile(r"^[a-z_]+:[a-z_]+$")
EVENT_KEY_MAX = 64  # the outbox column's width
# Hosts Bitbucket Cloud itself writes into payload links, whatever API base is configured
# (a proxy or gateway in front of Bitbucket still receives Bitbucket's own links).
CANONICAL_HOSTS = frozenset({"api.bitbucket.org", "bitbucket.org"})
# Bitbucket's payloads are a dozen levels deep and carry small numbers: far beyond either is
# not a Bitbucket delivery, and would cost unbounded work (Python refuses integers over 4,300
# digits with a ValueError; PostgreSQL's JSONB refuses NaN and Infinity).
MAX_BODY_DEPTH = 64
MAX_INTEGER_DIGITS = 100
# What PostgreSQL's JSONB cannot hold: NUL and UTF-16 surrogates without their pair.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UUID_TEXT = re.compile(
    r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$"
)


def signature_valid(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """`X-Hub-Signature: sha256=<hex>` against each accepted secret, in constant time."""
    if not header or not header.isascii() or not header.startswith("sha256="):
        return False  # non-ASCII text cannot be a hex digest (and compare_digest refuses it)
    given = header.removeprefix("sha256=").strip().lower()
    valid = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        # Check every secret, so timing does not tell which one matched.
        valid |= hmac.compare_digest(expected, given)
    return valid


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


class DeliveryHeadersSchema(_Lenient):
    event_key = fields.String(
        required=True,
        data_key="X-Event-Key",
        validate=[validate.Length(max=EVENT_KEY_MAX), validate.Regexp(EVENT_KEY)],
    )
    request_uuid = fields.String(
        required=True, data_key="X-Request-UUID", validate=validate.Regexp(UUID_TEXT)
    )
    hook_uuid = fields.String(
        load_default=None, data_key="X-Hook-UUID", validate=validate.Regexp(UUID_TEXT)
    )
    attempt = fields.Integer(
        load_default=1, data_key="X-Attempt-Number", validate=validate.Range(min=1, max=100)
    )


class _Link(_Lenient):
    href = fields.String(required=True)


class _Links(_Lenient):
    self = fields.Nested(_Link, load_default=None)


class _Project(_Lenient):
    uuid = fields.String(required=True)
    key = fields.String(required=True)
    name = fields.String(load_default="")


class _Workspace(_Lenient):
    uuid = fields.String(required=True)
    slug = fields.String(required=True)
    name = fields.String(load_default="")


class WebhookRepositorySchema(_Lenient):
    uuid = fields.String(required=True, validate=validate.Regexp(UUID_TEXT))
    full_name = fields.String(
        required=True,
        validate=[validate.Length(max=512), validate.Regexp(r"^[^/\s]+/[^/\s]+$")],
    )
    name = fields.String(load_default="")
    is_private = fields.Boolean(load_default=None, allow_none=True)
    project = fields.Nested(_Project, load_default=None, allow_none=True)
    workspace = fields.Nested(_Workspace, load_default=None, allow_none=True)
    links = fields.Nested(_Links, load_default=None)


class _Target(_Lenient):
    hash = fields.String(load_default=None, allow_none=True)
    date = fields.AwareDateTime(load_default=None, allow_none=True)


class _Ref(_Lenient):
    type = fields.String(required=True)
    name = fields.String(required=True)
    target = fields.Nested(_Target, load_default=None, allow_none=True)


class _Change(_Lenient):
    new = fields.Nested(_Ref, load_default=None, allow_none=True)
    old = fields.Nested(_Ref, load_default=None, allow_none=True)
    created = fields.Boolean(load_default=False)
    closed = fields.Boolean(load_default=False)
    forced = fields.Boolean(load_default=False)
    truncated = fields.Boolean(load_default=False)


class _Push(_Lenient):
    changes = fields.List(fields.Nested(_Change), required=True)


class _RepositoryEvent(_Lenient):
    repository = fields.Nested(WebhookRepositorySchema, required=True)


class PushSchema(_RepositoryEvent):
    push = fields.Nested(_Push, required=True)


class RepositoryChangeSchema(_RepositoryEvent):
    changes = fields.Dict(load_default=dict)


class PullRequestEventSchema(_RepositoryEvent):
    pullrequest = fields.Nested(PullRequestSchema, required=True)


class CommitStatusEventSchema(_RepositoryEvent):
    commit_status = fields.Nested(CommitStatusSchema, required=True)


REPOSITORY_EVENTS = ("repo:updated", "repo:transfer", "repo:created", "repo:deleted")
PULL_REQUEST_EVENTS = (
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:approved",
    "pullrequest:unapproved",
    "pullrequest:fulfilled",
    "pullrequest:rejected",
    "pullrequest:changes_request_created",
    "pullrequest:changes_request_removed",
)
STATUS_EVENTS = ("repo:commit_status_created", "repo:commit_status_updated")

SCHEMAS: dict[str, Schema] = {
    "repo:push": PushSchema(),
    **{event: RepositoryChangeSchema() for event in REPOSITORY_EVENTS},
    **{event: PullRequestEventSchema() for event in PULL_REQUEST_EVENTS},
    **{event: CommitStatusEventSchema() for event in STATUS_EVENTS},
}
HANDLED_EVENTS = tuple(SCHEMAS)


def load_event(event_key: str, body: Any, api_url: str) -> dict[str, Any]:
    """The validated body of a handled event; `ValidationError` names the field at fault.

    The repository's own link must be on Bitbucket's hosts or the configured API host: a
    delivery naming any other host is refused. Links are only checked, never followed: every
    URL bbsync calls is built from the configured base and the repository's identity.
    """
    if not isinstance(body, dict):
        raise ValidationError({"_schema": ["body must be a JSON object"]})
    data: dict[str, Any] = SCHEMAS[event_key].load(body)
    links = data["repository"].get("links") or {}
    own = (links.get("self") or {}).get("href")
    if own and not link_allowed(own, api_url):
        raise ValidationError(
            {"repository": {"links": {"self": {"href": ["not on a Bitbucket or configured host"]}}}}
        )
    return data


def link_allowed(href: str, api_url: str) -> bool:
    """True for an https link on Bitbucket's own hosts, or any link under the configured API."""
    if href == api_url or href.startswith(api_url.rstrip("/") + "/"):
        return True
    try:
        parts = urlsplit(href)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme == "https" and not parts.username and host in CANONICAL_HOSTS


class UnusableBody(ValueError):
    """A delivery body that is not JSON bbsync can store; the message names the problem."""


def _constant(name: str) -> Any:
    raise UnusableBody(f"{name} is not a JSON number")


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise UnusableBody(f"an integer has more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _real(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnusableBody(f"the number {text[:40]} is out of range")
    return value


# Escapes that may stand for text PostgreSQL's JSONB cannot hold (NUL, surrogates): a body
# with none of them, in strict UTF-8, is stored as the very text it came as.
_ESCAPED_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UTF8_BOM = b"\xef\xbb\xbf"
# Number text PostgreSQL's numeric takes as Python reads it: anything longer, or with a
# three-digit exponent (`1e-999` is 0.0 to Python), makes the stored text re-serialised.
_PLAIN_NUMBER_CHARS = 32
_PLAIN_REAL = re.compile(r"^-?[0-9.]+(?:[eE][-+]?[0-9]{1,2})?$")


def parse_body_text(raw: bytes) -> tuple[Any, str, bool]:
    """The JSON of a delivery, the JSON text to store for it, and whether text had to be
    replaced (as `parse_body`).

    The stored text is the body as it came whenever the database can hold it as it stands
    (strict UTF-8, no escaped NUL or surrogate, numbers PostgreSQL reads as Python does):
    no re-serialisation on the common path. Otherwise it is the checked value re-serialised.
    """
    if not raw.startswith(_UTF8_BOM) and _ESCAPED_UNSTORABLE.search(raw) is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass  # not strict UTF-8 (or encoded surrogates): the careful path says which
        else:
            plain = True

            def real(number: str) -> float:
                nonlocal plain
                if len(number) > _PLAIN_NUMBER_CHARS or not _PLAIN_REAL.match(number):
                    plain = False
                return _real(number)

            value = _loads(text, real)
            check_depth(value)
            return value, (text if plain else json.dumps(value)), False
    value, sanitized = parse_body(raw)
    return value, json.dumps(value), sanitized


def _loads(source: str | bytes, real: Any = None) -> Any:
    try:
        return json.loads(
            source, parse_constant=_constant, parse_int=_integer, parse_float=real or _real
        )
    except UnicodeDecodeError as exc:
        raise UnusableBody(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise UnusableBody(f"body is not JSON: {exc}") from None
    except RecursionError:
        raise UnusableBody("body is nested too deeply") from None


def check_depth(value: Any) -> None:
    """`UnusableBody` when containers nest deeper than `MAX_BODY_DEPTH` (walked without
    recursion, containers only)."""
    if not isinstance(value, (dict, list)):
        return
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= MAX_BODY_DEPTH:
            raise UnusableBody(f"body is nested more than {MAX_BODY_DEPTH} levels deep")
        for child in item.values() if type(item) is dict else item:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))


def parse_body(raw: bytes) -> tuple[Any, bool]:
    """The JSON of a delivery, and whether text had to be replaced to be storable.

    Strings (and keys) with NUL or unpaired surrogates, which valid JSON may carry but
    PostgreSQL's JSONB cannot, get U+FFFD in their place: the delivery is kept (its signature
    was checked on the raw bytes) and marked. `UnusableBody` names anything refused.
    """
    return _storable(_loads(raw))


def storable_text(text: str) -> str:
    """`text` with NUL and unpaired surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


def _storable(value: Any) -> tuple[Any, bool]:
    """`value` with unstorable text replaced, walked without recursion and depth-bounded."""
    replaced = False

    def clean(text: str) -> str:
        nonlocal replaced
        if _UNSTORABLE.search(text) is None:
            return text
        replaced = True
        return storable_text(text)

    root: list[Any] = [value]
    stack: list[tuple[list[Any] | dict[str, Any], Any, int]] = [(root, 0, 0)]
    while stack:
        parent, key, depth = stack.pop()
        item = parent[key]
        if isinstance(item, str):
            parent[key] = clean(item)
        elif isinstance(item, (list, dict)):
            if depth >= MAX_BODY_DEPTH:
                raise UnusableBody(f"body is nested more than {MAX_BODY_DEPTH} levels deep")
            if isinstance(item, dict):
                if any(_UNSTORABLE.search(k) for k in item):
                    item = {clean(k): v for k, v in item.items()}
                    parent[key] = item
                stack.extend((item, k, depth + 1) for k in item)
            else:
                stack.extend((item, i, depth + 1) for i in range(len(item)))
    return root[0], replaced
