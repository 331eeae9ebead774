"""Access: the mirrored repository permissions, and identity-aware actions.

`GET /api/permissions?user=` and `GET /api/repositories/{ws}/{slug}/permissions` serve what a
Backstage permission policy needs to mirror Bitbucket's access (service token).

`POST /api/repositories/{ws}/{slug}/pipelines` runs a pipeline on behalf of a Backstage user:
the caller sends the user's Backstage token instead of the service token. Bitbucket Cloud
only: a Data Center repository (workspace `{host}/{KEY}`) is answered 400, as Data Center has
no Pipelines. Who the user is in
Bitbucket comes only from the workspace's member list (`app/web/identity.py`), and only write
(or admin) access, directly or through a group, lets the trigger through.

What is written to `access_audit`: refusals of a proven user (bad body, unknown repository,
no write access); for an allowed trigger, an `attempted` row committed before Bitbucket is
called, then its outcome. A request without a valid user token proves no one: it is only
counted (`bbsync_unauthenticated_requests_total`), so anonymous callers cannot fill the table.
The call to Bitbucket is made once (a POST is never repeated) and waits at most
`BBSYNC_ACTION_TIMEOUT_SECONDS`, well inside the web server's own timeout.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from flask import Blueprint, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.bitbucket.budget import Priority
from app.bitbucket.client import api_path
from app.bitbucket.errors import (
    BitbucketError,
    BitbucketRequestError,
    BitbucketUnavailable,
    CredentialError,
    NoAnswer,
    RetryLater,
)
from app.bitbucket.schemas import PipelineSchema
from app.models import Repository, RepositoryPermission, Workspace, WorkspaceMember
from app.ops.telemetry import record_unauthenticated
from app.sync.activity import store_pipeline
from app.sync.people import audit
from app.web import runtime
from app.web.auth import require_api_token
from app.web.identity import (
    Refused,
    groups_of,
    may_write,
    member_account,
    repository_workspaces,
    verify_backstage_token,
)
from app.web.openapi import Reply, documented
from app.web.paging import load_query
from app.web.responses import ErrorSchema

log = logging.getLogger(__name__)

access_api = Blueprint("access_api", __name__, url_prefix="/api")
access_api.before_request(require_api_token)
# Caller-influenced text kept in an audit row is cut to this length.
AUDIT_TEXT_MAX = 300


class PermissionSchema(Schema):
    repository = fields.String()
    principal_type = fields.String()
    principal = fields.String()
    permission = fields.String()


# A branch name or selector pattern has no control characters (and none can be stored).
PRINTABLE = validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="control characters are not accepted")


class TriggerSchema(Schema):
    branch = fields.String(required=True, validate=[validate.Length(min=1, max=255), PRINTABLE])
    selector = fields.String(
        load_default=None, validate=[validate.Length(min=1, max=255), PRINTABLE]
    )
    variables = fields.List(
        fields.Dict(keys=fields.String(), values=fields.Raw()),
        load_default=list,
        validate=validate.Length(max=50),
    )


class PermissionQuerySchema(Schema):
    user = fields.String(
        required=True,
        validate=validate.Regexp(r"\S", error="give an account id, nickname or uuid"),
        metadata={"description": "Account id, nickname or uuid of a current member"},
    )


class UserPermissionsSchema(Schema):
    user = fields.String(required=True, metadata={"description": "The member's account id"})
    groups = fields.List(fields.String(), required=True)
    items = fields.List(fields.Nested(PermissionSchema), required=True)


class RepositoryPermissionsSchema(Schema):
    items = fields.List(fields.Nested(PermissionSchema), required=True)


class TriggeredPipelineSchema(Schema):
    uuid = fields.String(allow_none=True)
    build_number = fields.Integer(allow_none=True)
    state = fields.String(allow_none=True)


NOT_KNOWN = Reply(ErrorSchema, "Not known to bbsync")
NO_DATABASE = Reply(ErrorSchema, "The database did not answer")
_permissions_schema = PermissionSchema(many=True)
_trigger_schema = TriggerSchema()


def _rows(session: Session, stmt: Any) -> list[dict[str, Any]]:
    return [
        {
            "repository": full_name,
            "principal_type": p.principal_type,
            "principal": p.principal,
            "permission": p.permission,
        }
        for p, full_name in session.execute(stmt).all()
    ]


def _live_permissions() -> Any:
    return (
        select(RepositoryPermission, Repository.full_name)
        .join(Repository, RepositoryPermission.repository_id == Repository.id)
        .where(RepositoryPermission.removed_at.is_(None), Repository.deleted_at.is_(None))
        .order_by(Repository.full_name, RepositoryPermission.principal)
    )


@access_api.get("/permissions")
@documented(
    summary="Repositories a member may access",
    auth="api",
    query=PermissionQuerySchema,
    responses={
        200: UserPermissionsSchema,
        404: Reply(ErrorSchema, "No current member"),
        503: NO_DATABASE,
    },
)
def permissions() -> Any:
    """Repositories a user (account id, nickname or uuid) may access, directly or by group."""
    who = load_query(PermissionQuerySchema())["user"].strip()
    with runtime().sessions() as session:
        member = session.scalars(
            select(WorkspaceMember).where(
                (WorkspaceMember.account_id == who)
                | (WorkspaceMember.nickname == who)
                | (WorkspaceMember.uuid == who),
                WorkspaceMember.removed_at.is_(None),
            )
        ).first()
        if member is None:
            return jsonify(error="not_found", message=f"no current member {who!r}"), 404
        # A group slug means a group of one workspace: match grants workspace by workspace.
        memberships = session.scalars(
            select(WorkspaceMember.workspace_id).where(
                WorkspaceMember.account_id == member.account_id,
                WorkspaceMember.removed_at.is_(None),
            )
        ).all()
        by_workspace = {ws: groups_of(session, ws, member.account_id) for ws in memberships}
        stmt = _live_permissions().where(
            or_(
                (RepositoryPermission.principal_type == "user")
                & (RepositoryPermission.principal == member.account_id),
                *(
                    (RepositoryPermission.principal_type == "group")
                    & RepositoryPermission.principal.in_(groups)
                    & Repository.workspace_id.in_(repository_workspaces(session, ws))
                    for ws, groups in by_workspace.items()
                    if groups
                ),
            )
        )
        return jsonify(
            user=member.account_id,
            groups=sorted(set().union(*by_workspace.values())),
            items=_permissions_schema.dump(_rows(session, stmt)),
        )


# `<path:…>`: a Data Center repository's workspace is `{host}/{KEY}`.
@access_api.get("/repositories/<workspace:workspace>/<slug>/permissions")
@documented(
    summary="Who may access a repository",
    auth="api",
    responses={200: RepositoryPermissionsSchema, 404: NOT_KNOWN, 503: NO_DATABASE},
)
def repository_permissions(workspace: str, slug: str) -> Any:
    """Who may access one repository."""
    with runtime().sessions() as session:
        repo = _repository(session, workspace, slug)
        if repo is None:
            return jsonify(
                error="not_found", message=f"repository {workspace}/{slug} is not known"
            ), 404
        stmt = _live_permissions().where(RepositoryPermission.repository_id == repo.id)
        return jsonify(items=_permissions_schema.dump(_rows(session, stmt)))


def _repository(session: Session, workspace: str, slug: str) -> Repository | None:
    return session.scalars(
        select(Repository)
        .join(Workspace, Repository.workspace_id == Workspace.id)
        .where(
            Workspace.slug == workspace, Repository.slug == slug, Repository.deleted_at.is_(None)
        )
    ).first()


def _trigger_repository(
    session: Session, workspace: str, slug: str, claims: dict[str, Any]
) -> tuple[Repository, str]:
    repo = _repository(session, workspace, slug)
    if repo is None:
        raise Refused(404, "not_found", f"repository {workspace}/{slug} is not known")
    account = member_account(session, repo.workspace_id, str(claims["sub"]))
    if not may_write(session, repo, account):
        raise Refused(403, "forbidden", f"{claims['sub']} has no write access to {repo.full_name}")
    return repo, account


def _pipeline_request(body: dict[str, Any]) -> dict[str, Any]:
    target: dict[str, Any] = {
        "type": "pipeline_ref_target",
        "ref_type": "branch",
        "ref_name": body["branch"],
    }
    if body["selector"]:
        target["selector"] = {"type": "custom", "pattern": body["selector"]}
    payload: dict[str, Any] = {"target": target}
    if body["variables"]:
        payload["variables"] = body["variables"]
    return payload


def _start_pipeline(workspace: str, slug: str, payload: dict[str, Any]) -> dict[str, Any]:
    """One POST to Bitbucket within the action timeout; a failure as `Refused`."""
    rt = runtime()
    timeout = rt.settings.action_timeout_seconds
    try:
        return rt.bitbucket(Priority.WEBHOOK, timeout=timeout).post_json(
            api_path("repositories", workspace, slug, "pipelines") + "/", payload, ok=(201,)
        )
    except NoAnswer:
        raise Refused(
            504,
            "bitbucket_timeout",
            f"Bitbucket did not answer within {timeout:g}s: the pipeline may have started; "
            "check Bitbucket before trying again",
        ) from None
    except BitbucketUnavailable as exc:
        raise Refused(
            502,
            "bitbucket_unavailable",
            f"{exc}; the pipeline may have started: check Bitbucket before trying again",
        ) from None
    except RetryLater as exc:
        raise Refused(503, "budget", str(exc)) from None
    except CredentialError as exc:
        # bbsync's own credential was refused: nothing the user can change.
        raise Refused(502, "bitbucket_error", str(exc)) from None
    except BitbucketRequestError as exc:
        # Bitbucket refused what the user asked for (no such branch, a bad selector): the
        # caller's to fix, so a 4xx with Bitbucket's reason, not a 502.
        raise Refused(422, "refused_by_bitbucket", str(exc)) from None
    except BitbucketError as exc:
        raise Refused(502, "bitbucket_error", str(exc)) from None


def _record_outcome(
    session: Session, workspace: str, action: str, subject: str, **detail: Any
) -> None:
    """The outcome row after Bitbucket answered. The user gets the real outcome even when the
    database fails now; the committed `attempted` row and this error tell the operator."""
    audit(session, workspace, action, subject, **detail)
    try:
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        log.error(
            "pipeline trigger outcome not audited",
            extra={"action": action, "attempt": detail.get("attempt"), "error": type(exc).__name__},
        )


@access_api.errorhandler(SQLAlchemyError)
def _database_unavailable(exc: SQLAlchemyError) -> Any:
    # Before any call to Bitbucket: nothing was started.
    log.error("access api database error", extra={"error": type(exc).__name__})
    return jsonify(error="database_unavailable", message="the database did not answer"), 503


def _cut(text: str) -> str:
    return text if len(text) <= AUDIT_TEXT_MAX else text[:AUDIT_TEXT_MAX] + "…"


# A Data Center repository's workspace is `{host}/{KEY}`: matched here so it gets a clear answer.
@access_api.post("/repositories/<workspace:workspace>/<slug>/pipelines")
@documented(
    summary="Run a pipeline for a Backstage user",
    auth="user",
    body=TriggerSchema,
    responses={
        201: Reply(TriggeredPipelineSchema, "Bitbucket started the pipeline"),
        400: Reply(
            ErrorSchema,
            "Invalid body, or a Bitbucket Data Center repository (workspace `{host}/{KEY}`): "
            "Data Center has no Pipelines",
        ),
        403: Reply(ErrorSchema, "The user has no write access to the repository"),
        404: NOT_KNOWN,
        422: Reply(ErrorSchema, "Bitbucket refused the request (e.g. no such branch)"),
        502: Reply(ErrorSchema, "Bitbucket failed; the pipeline may have started"),
        503: Reply(
            ErrorSchema,
            "The rate budget is spent, the database did not answer, or identity-aware "
            "actions are not configured",
        ),
        504: Reply(ErrorSchema, "Bitbucket did not answer in time; it may have started"),
    },
)
def trigger_pipeline(workspace: str, slug: str) -> Any:
    """Run a pipeline on a branch for a Backstage user with write access."""
    rt = runtime()
    try:
        claims = verify_backstage_token(rt.settings, request.headers.get("Authorization", ""))
    except Refused as refused:
        # No proven identity: counted, never stored.
        record_unauthenticated(rt.redis, "pipeline_trigger", refused.reason)
        return refused.answer()
    subject = _cut(str(claims["sub"]))
    detail: dict[str, Any] = {"repository": _cut(f"{workspace}/{slug}")}
    with rt.sessions() as session:
        try:
            if "/" in workspace:
                raise Refused(
                    400,
                    "not_supported",
                    f"{workspace}/{slug} is a Bitbucket Data Center repository: Data Center "
                    "has no Pipelines (run its builds in the CI server that reports to it)",
                )
            try:
                body = _trigger_schema.load(request.get_json(silent=True) or {})
            except ValidationError as exc:
                raise Refused(400, "invalid_body", f"fields: {exc.messages}") from None
            detail.update(branch=body["branch"], selector=body["selector"])
            repo, detail["account_id"] = _trigger_repository(session, workspace, slug, claims)
        except Refused as refused:
            audit(
                session,
                _cut(workspace),
                "pipeline_trigger_refused",
                subject,
                status=refused.status,
                reason=_cut(str(refused)),
                **detail,
            )
            session.commit()
            return refused.answer()
        # Committed before the call: a web worker killed mid-call still leaves this row.
        attempt = audit(session, workspace, "pipeline_trigger_attempted", subject, **detail)
        session.commit()
        detail["attempt"] = attempt.id
        try:
            created = _start_pipeline(workspace, slug, _pipeline_request(body))
        except Refused as failed:
            log.warning(
                "pipeline trigger failed",
                extra={"repository": f"{workspace}/{slug}", "status": failed.status},
            )
            _record_outcome(
                session,
                workspace,
                "pipeline_trigger_failed",
                subject,
                status=failed.status,
                reason=_cut(str(failed)),
                **detail,
            )
            return failed.answer()
        with contextlib.suppress(ValidationError):
            # Shown in the API at once; reconciliation and later reads keep it current.
            store_pipeline(session, repo, PipelineSchema().load(created))
        _record_outcome(
            session,
            workspace,
            "pipeline_trigger_allowed",
            subject,
            pipeline=created.get("uuid"),
            **detail,
        )
    return jsonify(
        uuid=created.get("uuid"),
        build_number=created.get("build_number"),
        state=(created.get("state") or {}).get("name"),
    ), 201
