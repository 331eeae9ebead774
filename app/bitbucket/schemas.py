"""marshmallow schemas of the Bitbucket payloads bbsync reads. Unknown keys are ignored:
Bitbucket adds fields freely; what we need is checked, typed and named here."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields, post_load, validate


class _BitbucketSchema(Schema):
    class Meta:
        unknown = EXCLUDE


class PageSchema(_BitbucketSchema):
    """The pagination envelope `{values, next?, previous?, page?, pagelen, size?}`."""

    values = fields.List(fields.Dict(), required=True)
    next = fields.String(load_default=None, allow_none=True)
    previous = fields.String(load_default=None, allow_none=True)
    page = fields.Integer(load_default=None, allow_none=True)
    pagelen = fields.Integer(load_default=None, allow_none=True)
    size = fields.Integer(load_default=None, allow_none=True)


class BranchRefSchema(_BitbucketSchema):
    name = fields.String(required=True)


class ProjectRefSchema(_BitbucketSchema):
    uuid = fields.String(required=True)
    key = fields.String(required=True)
    name = fields.String(load_default="")


class WorkspaceRefSchema(_BitbucketSchema):
    uuid = fields.String(required=True)
    slug = fields.String(required=True)
    name = fields.String(load_default="")


class RepositorySchema(_BitbucketSchema):
    """A repository from `GET /repositories/{ws}` or `/repositories/{ws}/{slug}`."""

    uuid = fields.String(required=True)
    full_name = fields.String(required=True)
    slug = fields.String(load_default=None)
    name = fields.String(load_default="")
    description = fields.String(load_default="", allow_none=True)
    is_private = fields.Boolean(load_default=True)
    language = fields.String(load_default="", allow_none=True)
    created_on = fields.AwareDateTime(load_default=None, allow_none=True)
    updated_on = fields.AwareDateTime(load_default=None, allow_none=True)
    mainbranch = fields.Nested(BranchRefSchema, load_default=None, allow_none=True)
    project = fields.Nested(ProjectRefSchema, load_default=None, allow_none=True)
    workspace = fields.Nested(WorkspaceRefSchema, load_default=None, allow_none=True)

    @post_load
    def _derive(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        # Webhook copies carry no slug: the slug is the part of full_name after the slash.
        if not data.get("slug"):
            data["slug"] = data["full_name"].split("/", 1)[-1]
        data["description"] = data.get("description") or ""
        data["language"] = data.get("language") or ""
        return data


# Trims each repository page of what bbsync never reads (links are most of the bytes).
REPOSITORY_LIST_FIELDS = "-values.links,-values.owner,-values.parent"


class _Account(_BitbucketSchema):
    account_id = fields.String(load_default=None, allow_none=True)
    uuid = fields.String(load_default=None, allow_none=True)
    display_name = fields.String(load_default=None, allow_none=True)


class _Commit(_BitbucketSchema):
    hash = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{7,40}$"))


class _Endpoint(_BitbucketSchema):
    branch = fields.Dict(load_default=None, allow_none=True)
    commit = fields.Nested(_Commit, load_default=None, allow_none=True)


class PullRequestSchema(_BitbucketSchema):
    id = fields.Integer(required=True, validate=validate.Range(min=1))
    title = fields.String(load_default="")
    state = fields.String(
        required=True, validate=validate.OneOf(["OPEN", "MERGED", "DECLINED", "SUPERSEDED"])
    )
    author = fields.Nested(_Account, load_default=None, allow_none=True)
    source = fields.Nested(_Endpoint, load_default=None)
    destination = fields.Nested(_Endpoint, load_default=None)
    merge_commit = fields.Nested(_Commit, load_default=None, allow_none=True)
    comment_count = fields.Integer(load_default=None, allow_none=True)
    task_count = fields.Integer(load_default=None, allow_none=True)
    created_on = fields.AwareDateTime(required=True)
    updated_on = fields.AwareDateTime(required=True)
    reviewers = fields.List(fields.Dict(), load_default=None, allow_none=True)
    participants = fields.List(fields.Dict(), load_default=None, allow_none=True)


class CommitStatusSchema(_BitbucketSchema):
    key = fields.String(required=True, validate=validate.Length(min=1, max=255))
    state = fields.String(
        required=True, validate=validate.OneOf(["INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"])
    )
    name = fields.String(load_default=None, allow_none=True)
    description = fields.String(load_default=None, allow_none=True)
    refname = fields.String(load_default=None, allow_none=True)
    url = fields.String(load_default=None, allow_none=True)
    commit = fields.Nested(_Commit, required=True)
    created_on = fields.AwareDateTime(load_default=None, allow_none=True)
    updated_on = fields.AwareDateTime(load_default=None, allow_none=True)


class _PipelineState(_BitbucketSchema):
    name = fields.String(required=True)
    result = fields.Dict(load_default=None, allow_none=True)


class _PipelineTarget(_BitbucketSchema):
    ref_type = fields.String(load_default=None, allow_none=True)
    ref_name = fields.String(load_default=None, allow_none=True)
    commit = fields.Dict(load_default=None, allow_none=True)


class PipelineSchema(_BitbucketSchema):
    """`GET /repositories/{ws}/{slug}/pipelines/` items."""

    uuid = fields.String(required=True)
    build_number = fields.Integer(load_default=None, allow_none=True)
    state = fields.Nested(_PipelineState, required=True)
    target = fields.Nested(_PipelineTarget, load_default=None, allow_none=True)
    trigger = fields.Dict(load_default=None, allow_none=True)
    created_on = fields.AwareDateTime(load_default=None, allow_none=True)
    completed_on = fields.AwareDateTime(load_default=None, allow_none=True)
    duration_in_seconds = fields.Integer(load_default=None, allow_none=True)
