"""Who a Backstage user is, for actions bbsync takes on their behalf.

The caller proves the user with the user's own Backstage token (a JWT, verified against the
configured JWKS, issuer and audience). Which Bitbucket account that user is comes only from
what bbsync derives from Bitbucket's member list: the `User` entity name PeopleSync gives a
workspace member (`user:default/<nickname>`) is matched against the live `workspace_members`
rows, never looked up in catalog entities, so a `kind: User` in some repository's
`catalog-info.yaml` carrying another account's `bitbucket.org/user-id` proves nothing.

Backstage signs users in by that annotation on the entities it reads from bbsync, so the
entity served under the token's name must also be PeopleSync's own, for the same account: a
descriptor that took the name first (and so could have Backstage sign someone else in as
that member) makes the trigger refuse rather than trust either side.
"""

from __future__ import annotations

import logging
from typing import Any

import jwt
from flask import Response, jsonify
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog.people import USER_ID, user_name
from app.config import Settings
from app.models import (
    BitbucketGroup,
    CatalogEntity,
    EntitySource,
    Repository,
    RepositoryPermission,
    Workspace,
    WorkspaceMember,
)

log = logging.getLogger(__name__)

WRITE = ("write", "admin")
ALGORITHMS = ["RS256", "ES256", "EdDSA"]
USER_REF_PREFIX = "user:default/"


class Refused(Exception):
    """An answer other than success: `status`, the JSON `error`, and a message for people.

    `reason` is a short fixed label (metrics), never caller-chosen text.
    """

    def __init__(self, status: int, error: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status, self.error, self.reason = status, error, reason or error

    def answer(self) -> tuple[Response, int]:
        response = jsonify(error=self.error, message=str(self))
        if self.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="bbsync"'
        return response, self.status


def verify_backstage_token(settings: Settings, header: str) -> dict[str, Any]:
    """The claims of the Backstage user token in an `Authorization` header, else `Refused`."""
    if not settings.backstage_jwks_url:
        raise Refused(
            503,
            "not_configured",
            "identity-aware actions need BBSYNC_BACKSTAGE_JWKS_URL and BBSYNC_BACKSTAGE_ISSUER",
        )
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token:
        raise Refused(
            401,
            "unauthorized",
            "send the Backstage user token as a bearer token",
            reason="missing_token",
        )
    try:
        key = _jwks_client(settings.backstage_jwks_url).get_signing_key_from_jwt(token).key
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=ALGORITHMS,
            audience=settings.backstage_audience,
            issuer=settings.backstage_issuer,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise Refused(
            401, "unauthorized", f"user token refused: {exc}", reason="invalid_token"
        ) from None
    if not isinstance(claims.get("sub"), str):
        raise Refused(401, "unauthorized", "user token has no subject", reason="invalid_token")
    return claims


_jwks_clients: dict[str, jwt.PyJWKClient] = {}


def _jwks_client(url: str) -> jwt.PyJWKClient:
    # One client per URL: it caches the keys, so a token costs no request to the JWKS.
    if url not in _jwks_clients:
        _jwks_clients[url] = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)
    return _jwks_clients[url]


def member_account(session: Session, workspace_id: int, user_ref: str) -> str:
    """The Bitbucket account of a user entity ref among a workspace's live members.

    Only bbsync's own naming of members counts (see the module docstring); a name two
    members share proves neither of them.
    """
    ref = user_ref.strip().lower()
    name = ref[len(USER_REF_PREFIX) :] if ref.startswith(USER_REF_PREFIX) else ""
    if not name:
        raise Refused(403, "forbidden", f"{user_ref} is not a user in the default namespace")
    accounts = {
        account
        for account, nickname in session.execute(
            select(WorkspaceMember.account_id, WorkspaceMember.nickname).where(
                WorkspaceMember.workspace_id == workspace_id,
                WorkspaceMember.removed_at.is_(None),
            )
        )
        if user_name(nickname, account) == name
    }
    if len(accounts) != 1:
        why = "is no current member" if not accounts else "names several members"
        raise Refused(403, "forbidden", f"{ref} {why} of the repository's workspace")
    account = accounts.pop()
    served = session.scalars(
        select(CatalogEntity).where(
            CatalogEntity.entity_ref == ref, CatalogEntity.deleted_at.is_(None)
        )
    ).first()
    served_account = (
        ((served.body.get("metadata") or {}).get("annotations") or {}).get(USER_ID)
        if served is not None and served.source == EntitySource.PEOPLE.value
        else None
    )
    if served_account != account:
        raise Refused(
            403,
            "forbidden",
            f"{ref} in the catalog is not bbsync's entity for that member (a descriptor "
            "defines it, or the member sync has not run yet)",
        )
    return account


def repository_workspaces(session: Session, workspace_id: int) -> list[int]:
    """The workspaces whose repositories the groups of a workspace may be granted: itself,
    and for a Data Center server's people (workspace `{host}`) its projects (`{host}/{KEY}`)."""
    slug = session.scalar(select(Workspace.slug).where(Workspace.id == workspace_id))
    if slug is None:
        return [workspace_id]
    projects = session.scalars(
        select(Workspace.id).where(Workspace.slug.startswith(f"{slug}/", autoescape=True))
    ).all()
    return [workspace_id, *projects]


def groups_of(session: Session, workspace_id: int, account_id: str) -> set[str]:
    """Slugs of the workspace's live groups `account_id` belongs to."""
    return {
        g.slug
        for g in session.scalars(
            select(BitbucketGroup).where(
                BitbucketGroup.workspace_id == workspace_id, BitbucketGroup.removed_at.is_(None)
            )
        )
        if account_id in (g.members or [])
    }


def may_write(session: Session, repo: Repository, account_id: str) -> bool:
    """Write or admin on `repo`, directly or through one of its workspace's groups."""
    grants = session.scalars(
        select(RepositoryPermission).where(
            RepositoryPermission.repository_id == repo.id,
            RepositoryPermission.removed_at.is_(None),
            RepositoryPermission.permission.in_(WRITE),
        )
    ).all()
    groups = groups_of(session, repo.workspace_id, account_id)
    return any(
        (g.principal_type == "user" and g.principal == account_id)
        or (g.principal_type == "group" and g.principal in groups)
        for g in grants
    )
