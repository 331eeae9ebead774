"""Access: the mirrored repository permissions, and identity-aware actions.

`GET /api/permissions?user=` and `GET /api/repositories/{ws}/{slug}/permissions` serve what a
Backstage permission policy needs to mirror Bitbucket's access (service token).

`POST /api/repositories/{ws}/{slug}/pipelines` runs a pipeline on behalf of a Backstage user:
the caller sends the user's Backstage token (a JWT, verified against the configured JWKS,
issuer and audience) instead of the service token; the user entity maps to a Bitbucket
account through `bitbucket.org/user-id`, and only write (or admin) access, directly or
through a group, lets the trigger through. Every attempt is written to `access_audit`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import jwt
from flask import Blueprint, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.bitbucket.budget import Priority
from app.bitbucket.client import api_path
from app.bitbucket.errors import BitbucketError, RetryLater
from app.bitbucket.schemas import PipelineSchema
from app.catalog.people import USER_ID
from app.models import (
    BitbucketGroup,
    CatalogEntity,
    Repository,
    RepositoryPermission,
    Workspace,
    WorkspaceMember,
)
from app.sync.activity import store_pipeline
from app.sync.people import audit
from app.web import runtime
from app.web.auth import require_api_token

log = logging.getLogger(__name__)

access_api = Blueprint("access_api", __name__, url_prefix="/api")
access_api.before_request(require_api_token)
WRITE = ("write", "admin")


class PermissionSchema(Schema):
    repository = fields.String()
    principal_type = fields.String()
    principal = fields.String()
    permission = fields.String()


class TriggerSchema(Schema):
    branch = fields.String(required=True, validate=validate.Length(min=1, max=255))
    selector = fields.String(load_default=None, validate=validate.Length(min=1, max=255))
    variables = fields.List(
        fields.Dict(keys=fields.String(), values=fields.Raw()),
        load_default=list,
        validate=validate.Length(max=50),
    )


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
def permissions() -> Any:
    """Repositories a user (account id, nickname or uuid) may access, directly or by group."""
    who = request.args.get("user", "").strip()
    if not who:
        return jsonify(
            error="invalid_query",
            message="give ?user=<account id or nickname>",
            fields={"user": ["Missing data for required field."]},
        ), 400
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
        groups = _groups_of(session, member.account_id)
        stmt = _live_permissions().where(
            (
                (RepositoryPermission.principal_type == "user")
                & (RepositoryPermission.principal == member.account_id)
            )
            | (
                (RepositoryPermission.principal_type == "group")
                & RepositoryPermission.principal.in_(groups)
            )
        )
        return jsonify(
            user=member.account_id,
            groups=sorted(groups),
            items=_permissions_schema.dump(_rows(session, stmt)),
        )


@access_api.get("/repositories/<workspace>/<slug>/permissions")
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


def _groups_of(session: Session, account_id: str) -> set[str]:
    return {
        g.slug
        for g in session.scalars(select(BitbucketGroup).where(BitbucketGroup.removed_at.is_(None)))
        if account_id in (g.members or [])
    }


def _may_write(session: Session, repo: Repository, account_id: str) -> bool:
    grants = session.scalars(
        select(RepositoryPermission).where(
            RepositoryPermission.repository_id == repo.id,
            RepositoryPermission.removed_at.is_(None),
            RepositoryPermission.permission.in_(WRITE),
        )
    ).all()
    groups = _groups_of(session, account_id)
    return any(
        (g.principal_type == "user" and g.principal == account_id)
        or (g.principal_type == "group" and g.principal in groups)
        for g in grants
    )


class Refused(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error = status, error


def verify_backstage_token(header: str) -> dict[str, Any]:
    """The claims of the Backstage user token in `Authorization`, or `Refused(401)`."""
    settings = runtime().settings
    if not settings.backstage_jwks_url:
        raise Refused(
            503, "not_configured", "identity-aware actions need BBSYNC_BACKSTAGE_JWKS_URL"
        )
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token:
        raise Refused(401, "unauthorized", "send the Backstage user token as a bearer token")
    try:
        key = _jwks_client(settings.backstage_jwks_url).get_signing_key_from_jwt(token).key
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256", "ES256", "EdDSA"],
            audience=settings.backstage_audience or None,
            issuer=settings.backstage_issuer or None,
            options={"require": ["exp", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise Refused(401, "unauthorized", f"user token refused: {exc}") from None
    return claims


_jwks_clients: dict[str, jwt.PyJWKClient] = {}


def _jwks_client(url: str) -> jwt.PyJWKClient:
    # One client per URL: it caches the keys, so a token costs no request to the JWKS.
    if url not in _jwks_clients:
        _jwks_clients[url] = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)
    return _jwks_clients[url]


def _trigger_repository(
    session: Session, workspace: str, slug: str, claims: dict[str, Any]
) -> tuple[Repository, str]:
    repo = _repository(session, workspace, slug)
    if repo is None:
        raise Refused(404, "not_found", f"repository {workspace}/{slug} is not known")
    user_ref = str(claims["sub"]).lower()
    user = session.scalars(
        select(CatalogEntity).where(
            CatalogEntity.entity_ref == user_ref, CatalogEntity.deleted_at.is_(None)
        )
    ).first()
    account = (
        ((user.body.get("metadata") or {}).get("annotations") or {}).get(USER_ID)
        if user is not None
        else None
    )
    if not account:
        raise Refused(403, "forbidden", f"{user_ref} maps to no Bitbucket account")
    if not _may_write(session, repo, str(account)):
        raise Refused(403, "forbidden", f"{user_ref} has no write access to {repo.full_name}")
    return repo, str(account)


@access_api.post("/repositories/<workspace>/<slug>/pipelines")
def trigger_pipeline(workspace: str, slug: str) -> Any:
    """Run a pipeline on a branch for a Backstage user with write access."""
    rt = runtime()
    subject, detail = "unknown", {"repository": f"{workspace}/{slug}"}
    with rt.sessions() as session:
        try:
            claims = verify_backstage_token(request.headers.get("Authorization", ""))
            subject = str(claims["sub"])
            try:
                body = _trigger_schema.load(request.get_json(silent=True) or {})
            except ValidationError as exc:
                raise Refused(400, "invalid_body", f"fields: {exc.messages}") from None
            detail.update(branch=body["branch"], selector=body["selector"])
            repo, account = _trigger_repository(session, workspace, slug, claims)
            detail["account_id"] = account
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
            try:
                created = rt.bitbucket(Priority.WEBHOOK).post_json(
                    api_path("repositories", workspace, slug, "pipelines") + "/",
                    payload,
                    ok=(201,),
                )
            except RetryLater as exc:
                raise Refused(503, "budget", str(exc)) from None
            except BitbucketError as exc:
                raise Refused(502, "bitbucket_error", str(exc)) from None
        except Refused as refused:
            audit(
                session,
                workspace,
                "pipeline_trigger_refused",
                subject,
                status=refused.status,
                reason=str(refused),
                **detail,
            )
            session.commit()
            return jsonify(error=refused.error, message=str(refused)), refused.status
        with contextlib.suppress(ValidationError):
            # Shown in the API at once; reconciliation and later reads keep it current.
            store_pipeline(session, repo, PipelineSchema().load(created))
        audit(
            session,
            workspace,
            "pipeline_trigger_allowed",
            subject,
            pipeline=created.get("uuid"),
            **detail,
        )
        session.commit()
    return jsonify(
        uuid=created.get("uuid"),
        build_number=created.get("build_number"),
        state=(created.get("state") or {}).get("name"),
    ), 201
