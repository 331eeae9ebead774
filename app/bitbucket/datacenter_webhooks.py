"""Bitbucket Data Center webhook deliveries: headers and the narrow body schema of each event.

Data Center sends `X-Event-Key`, `X-Request-Id` (a UUID, the same on a retry) and
`X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>` (bitbucket_sim/README.md lists
where each fact comes from). Only what bbsync reads is required; the payload's other keys
pass through unvalidated and are stored with the delivery. A validation error names the
field at fault, as marshmallow nests it (`{"repository": {"slug": [...]}}`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from app.bitbucket.webhooks import EVENT_KEY_MAX, UUID_TEXT

# Data Center's keys have two or three parts: `repo:refs_changed`, `pr:reviewer:approved`.
DC_EVENT_KEY = re.compile(r"^[a-z_]+(:[a-z_]+){1,2}$")
PING = "diagnostics:ping"


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


class DataCenterHeadersSchema(_Lenient):
    event_key = fields.String(
        required=True,
        data_key="X-Event-Key",
        validate=[validate.Length(max=EVENT_KEY_MAX), validate.Regexp(DC_EVENT_KEY)],
    )
    request_id = fields.String(
        required=True,
        data_key="X-Request-Id",
        validate=validate.Regexp(UUID_TEXT),
        metadata={"description": "One per delivery; the same on Bitbucket's retries"},
    )


class DataCenterSignedHeadersSchema(DataCenterHeadersSchema):
    """The headers as documented: the loaded ones and the signature the view checks first."""

    signature = fields.String(
        load_default=None,
        data_key="X-Hub-Signature",
        metadata={
            "description": "sha256=<hex HMAC-SHA256 of the body> with BITBUCKET_WEBHOOK_SECRET; "
            "required unless BBSYNC_ALLOW_UNSIGNED_WEBHOOKS"
        },
    )


class ProjectSchema(_Lenient):
    key = fields.String(required=True, validate=validate.Regexp(r"^~?[A-Za-z0-9_.-]{1,128}$"))
    id = fields.Integer(load_default=None, allow_none=True)
    name = fields.String(load_default="")


class RepositorySchema(_Lenient):
    id = fields.Integer(required=True, strict=True)
    slug = fields.String(
        required=True, validate=[validate.Length(min=1, max=128), validate.Regexp(r"^[^/\s]+$")]
    )
    name = fields.String(load_default="")
    project = fields.Nested(ProjectSchema, required=True)


class _Ref(_Lenient):
    id = fields.String(required=True)
    displayId = fields.String(load_default="")
    type = fields.String(load_default="BRANCH")


class _RefChange(_Lenient):
    ref = fields.Nested(_Ref, load_default=None, allow_none=True)
    refId = fields.String(required=True)
    fromHash = fields.String(required=True)
    toHash = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["ADD", "UPDATE", "DELETE"]))


class _PullRequestRef(_Lenient):
    id = fields.String(required=True)
    displayId = fields.String(load_default="")
    latestCommit = fields.String(load_default=None, allow_none=True)
    repository = fields.Nested(RepositorySchema, required=True)


class _PullRequest(_Lenient):
    id = fields.Integer(required=True, strict=True)
    state = fields.String(required=True, validate=validate.OneOf(["OPEN", "MERGED", "DECLINED"]))
    title = fields.String(load_default="")
    createdDate = fields.Integer(load_default=None, allow_none=True)
    updatedDate = fields.Integer(load_default=None, allow_none=True)
    author = fields.Dict(load_default=None, allow_none=True)
    reviewers = fields.List(fields.Dict(), load_default=None, allow_none=True)
    participants = fields.List(fields.Dict(), load_default=None, allow_none=True)
    fromRef = fields.Nested(_PullRequestRef, required=True)
    toRef = fields.Nested(_PullRequestRef, required=True)


class RefsChangedSchema(_Lenient):
    date = fields.String(load_default=None, allow_none=True)  # `2019-06-17T19:37:57+1000`
    repository = fields.Nested(RepositorySchema, required=True)
    changes = fields.List(fields.Nested(_RefChange), required=True)


class RepositoryModifiedSchema(_Lenient):
    old = fields.Nested(RepositorySchema, required=True)
    new = fields.Nested(RepositorySchema, required=True)


class ForkedSchema(_Lenient):
    repository = fields.Nested(RepositorySchema, required=True)  # the fork


class PullRequestEventSchema(_Lenient):
    pullRequest = fields.Nested(_PullRequest, required=True)


class ProjectModifiedSchema(_Lenient):
    old = fields.Nested(ProjectSchema, required=True)
    new = fields.Nested(ProjectSchema, required=True)


PULL_REQUEST_EVENTS = (
    "pr:opened",
    "pr:from_ref_updated",
    "pr:modified",
    "pr:reviewer:updated",
    "pr:reviewer:approved",
    "pr:reviewer:unapproved",
    "pr:reviewer:needs_work",
    "pr:reviewer:changes_requested",
    "pr:merged",
    "pr:declined",
    "pr:deleted",
)
DC_SCHEMAS: dict[str, Schema] = {
    "repo:refs_changed": RefsChangedSchema(),
    "repo:modified": RepositoryModifiedSchema(),
    "repo:forked": ForkedSchema(),
    "project:modified": ProjectModifiedSchema(),
    **{event: PullRequestEventSchema() for event in PULL_REQUEST_EVENTS},
}
DC_HANDLED_EVENTS = tuple(DC_SCHEMAS)
# What `bbsync webhooks install` subscribes a Data Center hook to (the reviewer events by
# their documented keys; a server naming "needs work" otherwise still sends the others).
DC_SUBSCRIBED_EVENTS = tuple(e for e in DC_HANDLED_EVENTS if e != "pr:reviewer:changes_requested")


def event_date(value: str | None) -> datetime | None:
    """A payload's `date` (Data Center writes the offset without a colon); None if unreadable."""
    if not value:
        return None
    for pattern in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(value, pattern)
        except ValueError:
            continue
    return None


def is_datacenter_event(event_key: str) -> bool:
    """True for an event key only Data Center sends (Cloud's keys never overlap these)."""
    return event_key in DC_SCHEMAS


def load_dc_event(event_key: str, body: Any) -> dict[str, Any]:
    """The validated body of a handled event; `ValidationError` names the field at fault."""
    if not isinstance(body, dict):
        raise ValidationError({"_schema": ["body must be a JSON object"]})
    data: dict[str, Any] = DC_SCHEMAS[event_key].load(body)
    return data


def event_repository(event_key: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """The repository a loaded event is about (the target's for a pull request, the new
    state for a rename, the fork for a fork); None for a project event."""
    if "pullRequest" in data:
        return dict(data["pullRequest"]["toRef"]["repository"])
    if event_key == "repo:modified":
        return dict(data["new"])
    repository = data.get("repository")
    return dict(repository) if repository else None


def event_project_key(event_key: str, data: dict[str, Any]) -> str:
    repository = event_repository(event_key, data)
    if repository is not None:
        return str(repository["project"]["key"])
    return str(data["new"]["key"])
