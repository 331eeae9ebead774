"""The JSON API for Backstage plugins: a repository's pull requests, pipelines, statuses and
health, by repository or by catalog entity. Read from rows; Bitbucket is never called here.

Each view declares its OpenAPI operation (`app.web.openapi.documented`) from the schemas below.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort
from marshmallow import Schema, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import retry_dropped
from app.models import CatalogEntity, CommitStatus, Pipeline, PullRequest, Repository, Workspace
from app.repository_health import health_repository, repository_health
from app.web import runtime
from app.web.auth import require_api_token
from app.web.openapi import Reply, documented
from app.web.paging import PageQuerySchema, fetch_page, load_query, page_schema
from app.web.responses import ErrorSchema, json_with_etag

activity_api = Blueprint("activity_api", __name__, url_prefix="/api")
activity_api.before_request(require_api_token)

PR_STATES = ["OPEN", "MERGED", "DECLINED", "SUPERSEDED"]
NOT_KNOWN = Reply(ErrorSchema, "Not known to bbsync")


class RepositoryOutSchema(Schema):
    uuid = fields.String()
    workspace = fields.String()
    slug = fields.String()
    full_name = fields.String()
    name = fields.String()
    description = fields.String()
    language = fields.String()
    is_private = fields.Boolean()
    default_branch = fields.String(allow_none=True)
    head_commit = fields.String(allow_none=True)
    project_key = fields.String(allow_none=True)
    updated_on = fields.DateTime(allow_none=True)
    last_push_at = fields.DateTime(allow_none=True)


class PullRequestOutSchema(Schema):
    number = fields.Integer(data_key="id")
    title = fields.String()
    state = fields.String()
    author_display_name = fields.String(data_key="author", allow_none=True)
    author_account_id = fields.String(allow_none=True)
    source_branch = fields.String(allow_none=True)
    destination_branch = fields.String(allow_none=True)
    source_commit = fields.String(allow_none=True)
    merge_commit = fields.String(allow_none=True)
    comment_count = fields.Integer(allow_none=True)
    task_count = fields.Integer(allow_none=True)
    reviewers = fields.Dict(allow_none=True)
    created_on = fields.DateTime(allow_none=True)
    updated_on = fields.DateTime(allow_none=True)
    closed_on = fields.DateTime(allow_none=True)


class PipelineOutSchema(Schema):
    uuid = fields.String()
    build_number = fields.Integer(allow_none=True)
    state = fields.String()
    result = fields.String(allow_none=True)
    trigger = fields.String(allow_none=True)
    ref_type = fields.String(allow_none=True)
    ref_name = fields.String(allow_none=True)
    commit_hash = fields.String(allow_none=True)
    duration_seconds = fields.Integer(allow_none=True)
    created_on = fields.DateTime(allow_none=True)
    completed_on = fields.DateTime(allow_none=True)


class StatusOutSchema(Schema):
    key = fields.String()
    state = fields.String()
    name = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    refname = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    commit_hash = fields.String(data_key="commit")
    created_on = fields.DateTime(allow_none=True)
    updated_on = fields.DateTime(allow_none=True)


class BuildSchema(Schema):
    source = fields.String()
    key = fields.String()
    name = fields.String(allow_none=True)
    result = fields.String(allow_none=True)
    commit = fields.String(allow_none=True)
    at = fields.DateTime(allow_none=True)
    url = fields.String(allow_none=True)


class HeadBuildSchema(Schema):
    key = fields.String()
    state = fields.String()
    name = fields.String(allow_none=True)
    updated_on = fields.DateTime(allow_none=True)


class HealthSchema(Schema):
    repository = fields.String()
    default_branch = fields.String(allow_none=True)
    open_pull_requests = fields.Integer()
    oldest_open_pull_request_age_seconds = fields.Integer(allow_none=True)
    last_build = fields.Nested(BuildSchema, allow_none=True)
    builds_on_head = fields.List(fields.Nested(HeadBuildSchema))
    pipeline_runs = fields.Integer()
    pipeline_success_rate = fields.Float(allow_none=True)
    last_push_at = fields.DateTime(allow_none=True)


class EntityHealthSchema(HealthSchema):
    entity_ref = fields.String()


PullRequestPageSchema = page_schema(PullRequestOutSchema, "PullRequestPage")
PipelinePageSchema = page_schema(PipelineOutSchema, "PipelinePage")
StatusPageSchema = page_schema(StatusOutSchema, "StatusPage")


class PullRequestQuerySchema(PageQuerySchema):
    state = fields.List(fields.String(validate=validate.OneOf(PR_STATES)), load_default=None)


class PipelineQuerySchema(PageQuerySchema):
    result = fields.String(load_default=None)
    ref = fields.String(load_default=None)


class StatusQuerySchema(PageQuerySchema):
    commit = fields.String(load_default=None, validate=validate.Regexp(r"^[0-9a-f]{7,40}$"))
    key = fields.String(load_default=None)


def _page(session: Session, stmt: Any, query: dict[str, Any], schema: type[Schema]) -> Any:
    """One page of `stmt` as `{items, next_offset}`, with an ETag."""
    rows, next_offset = fetch_page(lambda s: session.scalars(s).all(), stmt, query)
    return json_with_etag(schema().dump({"items": rows, "next_offset": next_offset}))


def _repository(session: Session, workspace: str, slug: str) -> Repository:
    repo = session.scalars(
        select(Repository)
        .join(Workspace, Repository.workspace_id == Workspace.id)
        .where(
            Workspace.slug == workspace, Repository.slug == slug, Repository.deleted_at.is_(None)
        )
    ).first()
    if repo is None:
        abort(404, description=f"repository {workspace}/{slug} is not known to bbsync")
    return repo


@activity_api.get("/repositories/<workspace:workspace>/<slug>")
@documented(
    summary="One repository",
    auth="api",
    responses={200: RepositoryOutSchema, 404: NOT_KNOWN},
    etag=True,
)
def repository(workspace: str, slug: str) -> Any:
    """A repository as bbsync mirrors it."""
    with runtime().sessions() as session:
        repo = _repository(session, workspace, slug)
        project = repo.project
        data = {
            **{c: getattr(repo, c) for c in RepositoryOutSchema().fields if hasattr(repo, c)},
            "workspace": workspace,
            "project_key": project.key if project else None,
        }
        return json_with_etag(RepositoryOutSchema().dump(data))


@activity_api.get("/repositories/<workspace:workspace>/<slug>/pullrequests")
@documented(
    summary="Pull requests of a repository",
    auth="api",
    query=PullRequestQuerySchema,
    responses={200: PullRequestPageSchema, 404: NOT_KNOWN},
    etag=True,
)
def pull_requests(workspace: str, slug: str) -> Any:
    """Pull requests, newest update first."""
    query = load_query(PullRequestQuerySchema())
    with runtime().sessions() as session:
        repo = _repository(session, workspace, slug)
        stmt = (
            select(PullRequest)
            .where(PullRequest.repository_id == repo.id)
            .order_by(PullRequest.updated_on.desc(), PullRequest.number.desc())
        )
        if query["state"]:
            stmt = stmt.where(PullRequest.state.in_(query["state"]))
        return _page(session, stmt, query, PullRequestPageSchema)


@activity_api.get("/repositories/<workspace:workspace>/<slug>/pipelines")
@documented(
    summary="Pipelines of a repository",
    auth="api",
    query=PipelineQuerySchema,
    responses={200: PipelinePageSchema, 404: NOT_KNOWN},
    etag=True,
)
def pipelines(workspace: str, slug: str) -> Any:
    """Pipelines, newest first."""
    query = load_query(PipelineQuerySchema())
    with runtime().sessions() as session:
        repo = _repository(session, workspace, slug)
        stmt = (
            select(Pipeline)
            .where(Pipeline.repository_id == repo.id)
            .order_by(Pipeline.created_on.desc(), Pipeline.id.desc())
        )
        if query["result"]:
            stmt = stmt.where(Pipeline.result == query["result"].upper())
        if query["ref"]:
            stmt = stmt.where(Pipeline.ref_name == query["ref"])
        return _page(session, stmt, query, PipelinePageSchema)


@activity_api.get("/repositories/<workspace:workspace>/<slug>/statuses")
@documented(
    summary="Commit statuses of a repository",
    auth="api",
    query=StatusQuerySchema,
    responses={200: StatusPageSchema, 404: NOT_KNOWN},
    etag=True,
)
def statuses(workspace: str, slug: str) -> Any:
    """Build statuses, newest first."""
    query = load_query(StatusQuerySchema())
    with runtime().sessions() as session:
        repo = _repository(session, workspace, slug)
        stmt = (
            select(CommitStatus)
            .where(CommitStatus.repository_id == repo.id)
            .order_by(CommitStatus.updated_on.desc(), CommitStatus.id.desc())
        )
        if query["commit"]:
            stmt = stmt.where(CommitStatus.commit_hash.startswith(query["commit"]))
        if query["key"]:
            stmt = stmt.where(CommitStatus.key == query["key"])
        return _page(session, stmt, query, StatusPageSchema)


_health_schema = HealthSchema()


@activity_api.get("/repositories/<workspace:workspace>/<slug>/health")
@documented(
    summary="Health of a repository",
    auth="api",
    responses={200: HealthSchema, 404: NOT_KNOWN},
    etag=True,
)
def health(workspace: str, slug: str) -> Any:
    """The repository's health summary."""
    rt = runtime()
    runs = rt.settings.health_pipeline_runs

    def lookup() -> dict[str, Any] | None:
        with rt.statement_sessions() as session:
            repo = health_repository(session, workspace, slug)
            return None if repo is None else repository_health(session, repo, runs)

    summary = retry_dropped(lookup)
    if summary is None:
        abort(404, description=f"repository {workspace}/{slug} is not known to bbsync")
    return json_with_etag(_health_schema.dump(summary))


@activity_api.get("/entities/<kind>/<namespace>/<name>/health")
@documented(
    summary="Health of a catalog entity's repository",
    auth="api",
    responses={200: EntityHealthSchema, 404: NOT_KNOWN},
    etag=True,
)
def entity_health(kind: str, namespace: str, name: str) -> Any:
    """The health of the repository behind a catalog entity (through its annotations)."""
    rt = runtime()
    ref = f"{kind}:{namespace}/{name}".lower()
    with rt.sessions() as session:
        entity = session.scalars(
            select(CatalogEntity).where(
                CatalogEntity.entity_ref == ref, CatalogEntity.deleted_at.is_(None)
            )
        ).first()
        if entity is None:
            abort(404, description=f"entity {ref} is not in the catalog")
        repo = _entity_repository(session, entity)
        if repo is None:
            abort(404, description=f"entity {ref} names no Bitbucket repository bbsync knows")
        summary = repository_health(session, repo, rt.settings.health_pipeline_runs)
        return json_with_etag(EntityHealthSchema().dump({**summary, "entity_ref": ref}))


def _entity_repository(session: Session, entity: CatalogEntity) -> Repository | None:
    annotations = (entity.body.get("metadata") or {}).get("annotations") or {}
    slug = annotations.get("bitbucket.com/project-slug")
    if isinstance(slug, str) and "/" in slug:
        repo = session.scalars(
            select(Repository).where(Repository.full_name == slug, Repository.deleted_at.is_(None))
        ).first()
        if repo is not None:
            return repo
    if entity.repository_id is not None:
        repo = session.get(Repository, entity.repository_id)
        if repo is not None and repo.deleted_at is None:
            return repo
    return None
