"""Bitbucket webhook deliveries: signature, headers and the body schema of each event family.

Only what bbsync reads is required; Bitbucket's other keys pass through unvalidated (they are
stored with the delivery). The repository object inside webhooks has no slug, main branch or
description: those come from the API or the database, never guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from app.bitbucket.schemas import CommitStatusSchema, PullRequestSchema

EVENT_KEY = re.compile(r"^[a-z_]+:[a-z_]+$")
UUID_TEXT = re.compile(
    r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$"
)


def signature_valid(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """`X-Hub-Signature: sha256=<hex>` against each accepted secret, in constant time."""
    if not header or not header.startswith("sha256="):
        return False
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
        required=True, data_key="X-Event-Key", validate=validate.Regexp(EVENT_KEY)
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
    full_name = fields.String(required=True, validate=validate.Regexp(r"^[^/\s]+/[^/\s]+$"))
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

    Links to the API inside the payload must point at the configured API: a delivery that
    names another host is refused rather than stored for a worker to trust.
    """
    if not isinstance(body, dict):
        raise ValidationError({"_schema": ["body must be a JSON object"]})
    data: dict[str, Any] = SCHEMAS[event_key].load(body)
    links = data["repository"].get("links") or {}
    own = (links.get("self") or {}).get("href")
    if own and not (own == api_url or own.startswith(api_url + "/")):
        raise ValidationError(
            {"repository": {"links": {"self": {"href": ["not on the configured API host"]}}}}
        )
    return data
