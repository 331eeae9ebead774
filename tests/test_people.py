"""People and access against the live simulator: users and groups as Backstage entities,
revocation with audit rows, the permissions API, degraded groups, the mapping file, and the
pipeline trigger on behalf of a Backstage user (JWT verified against a real JWKS endpoint;
tests/test_access.py has the trigger's hostile cases)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient
from sqlalchemy import select

from app.models import (
    AccessAudit,
    BitbucketGroup,
    CatalogEntity,
    RepositoryPermission,
    WorkspaceMember,
)
from app.runtime import Runtime
from app.sync.people import PeopleSync
from app.sync.workspace import WorkspaceSync
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.backstage_validator import validate_entities
from tests.conftest import api_client, migrate
from tests.identity_support import ISSUER, jwks_server, user_token

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]


def sync_people(rt: Runtime) -> Any:
    with rt.sessions() as session:
        return PeopleSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")


def full_sync(rt: Runtime) -> None:
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")


def live(rt: Runtime, kind: str) -> dict[str, CatalogEntity]:
    with rt.sessions() as session:
        rows = session.scalars(
            select(CatalogEntity).where(
                CatalogEntity.kind == kind, CatalogEntity.deleted_at.is_(None)
            )
        )
        return {e.name: e for e in rows}


def audits(rt: Runtime, action: str) -> list[AccessAudit]:
    with rt.sessions() as session:
        return list(session.scalars(select(AccessAudit).where(AccessAudit.action == action)))


@pytest.fixture
def people(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> tuple[SimProcess, Runtime]:
    migrate(sqlite_url)
    sim = sim_factory(repos=10, seed=12, access_token="sim-token")
    rt = runtime_for(sim, BITBUCKET_RATE_LIMIT_PER_HOUR="100000")
    full_sync(rt)
    return sim, rt


def test_members_and_groups_become_valid_users_and_groups(
    people: tuple[SimProcess, Runtime],
) -> None:
    _, rt = people
    run = sync_people(rt)
    assert run.status == "succeeded" and run.error is None
    users, groups = live(rt, "User"), live(rt, "Group")
    assert len(users) == run.counts["members"] > 0
    user = next(iter(users.values()))
    annotations = user.body["metadata"]["annotations"]
    assert annotations["bitbucket.org/user-id"].startswith("557058:")
    assert annotations["bitbucket.org/uuid"].startswith("{")
    assert annotations["bitbucket.org/username"] == user.name
    team_groups = [g for g in groups.values() if g.source == "people"]
    assert len(team_groups) == run.counts["groups"] > 0
    members = {m for g in team_groups for m in g.body["spec"]["members"]}
    assert members <= set(users)
    assert any(user.body["spec"]["memberOf"] for user in users.values())
    assert validate_entities([e.body for e in (*users.values(), *groups.values())]) == []


def test_a_removed_member_disappears_with_an_audit_row(
    people: tuple[SimProcess, Runtime],
) -> None:
    sim, rt = people
    sync_people(rt)
    with rt.sessions() as session:
        leaver = session.scalars(select(WorkspaceMember).order_by(WorkspaceMember.id)).first()
    assert leaver is not None
    assert sim.admin("DELETE", f"members/{leaver.account_id}").status_code < 300
    run = sync_people(rt)
    assert run.counts["removed_members"] == 1
    assert leaver.nickname not in live(rt, "User")
    (row,) = audits(rt, "member_removed")
    assert row.subject == leaver.account_id and row.detail["display_name"] == leaver.display_name
    with rt.sessions() as session:
        gone = session.scalars(
            select(WorkspaceMember).where(WorkspaceMember.account_id == leaver.account_id)
        ).one()
        assert gone.removed_at is not None


def test_removing_most_members_at_once_is_refused(people: tuple[SimProcess, Runtime]) -> None:
    sim, rt = people
    first = sync_people(rt)
    with rt.sessions() as session:
        accounts = session.scalars(select(WorkspaceMember.account_id)).all()
    for account in accounts[: int(len(accounts) * 0.8)]:
        sim.admin("DELETE", f"members/{account}")
    run = sync_people(rt)
    assert run.error and "member sweep refused" in run.error
    assert len(live(rt, "User")) == first.counts["members"]
    assert audits(rt, "member_removed") == []


def test_permissions_api_answers_per_user_and_per_repository(
    people: tuple[SimProcess, Runtime],
) -> None:
    _, rt = people
    sync_people(rt)
    client = api_client(create_app(runtime=rt))
    with rt.sessions() as session:
        grant = session.scalars(select(RepositoryPermission)).first()
        member = (
            session.scalars(
                select(WorkspaceMember).where(WorkspaceMember.account_id == grant.principal)
            ).one()
            if grant
            else None
        )
    assert grant is not None and member is not None
    mine = client.get(f"/api/permissions?user={member.nickname}").json
    assert mine["user"] == member.account_id
    assert any(i["permission"] == grant.permission for i in mine["items"])
    slug = mine["items"][0]["repository"].split("/", 1)[1]
    theirs = client.get(f"/api/repositories/acme/{slug}/permissions").json["items"]
    assert any(i["principal"] == member.account_id for i in theirs)
    assert client.get("/api/permissions").status_code == 400
    assert client.get("/api/permissions?user=nobody").status_code == 404
    assert client.get("/api/repositories/acme/nope/permissions").status_code == 404
    assert create_app(runtime=rt).test_client().get("/api/permissions?user=x").status_code == 401


def test_without_the_groups_api_project_groups_remain_and_a_warning_is_recorded(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=10, seed=12, access_token="sim-token", groups_api=False)
    rt = runtime_for(sim)
    full_sync(rt)
    run = sync_people(rt)
    assert run.status == "succeeded"
    assert run.counts["groups"] == "unavailable"
    assert any("groups unavailable" in w for w in run.counts["warnings"])
    groups = live(rt, "Group")
    assert groups and all(g.source == "bitbucket" for g in groups.values())


def test_the_mapping_file_names_groups_and_owners(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, sqlite_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=10, seed=12, access_token="sim-token")
    repo = next(r for r in sim.repositories() if r["catalog_layout"] == "none")
    mapping = tmp_path / "groups.yaml"
    mapping.write_text(
        f"groups:\n  administrators: {{name: admins, parent: company}}\n"
        f"projects:\n  {repo['project_key']}: {{name: owning-team, parent: company}}\n"
    )
    rt = runtime_for(sim, BBSYNC_GROUP_MAPPING=str(mapping))
    full_sync(rt)
    sync_people(rt)
    groups = live(rt, "Group")
    assert groups["admins"].body["spec"]["parent"] == "company"
    assert groups["owning-team"].body["spec"]["parent"] == "company"
    component = live(rt, "Component")[repo["slug"]]
    assert component.body["spec"]["owner"] == "group:default/owning-team"


@pytest.fixture
def jwks() -> Iterator[tuple[str, Any]]:
    with jwks_server() as served:
        yield served


def token(key: Any, sub: str, **claims: Any) -> str:
    return user_token(key, sub, **claims)


def test_pipeline_trigger_for_writers_only_with_a_verified_user_token(
    people: tuple[SimProcess, Runtime],
    runtime_for: RuntimeFactory,
    sqlite_url: str,
    jwks: tuple[str, Any],
) -> None:
    sim, _ = people
    url, key = jwks
    rt = runtime_for(
        sim,
        BITBUCKET_RATE_LIMIT_PER_HOUR="100000",
        BBSYNC_BACKSTAGE_JWKS_URL=url,
        BBSYNC_BACKSTAGE_ISSUER=ISSUER,
    )
    sync_people(rt)
    with rt.sessions() as session:
        grants = session.scalars(select(RepositoryPermission)).all()
        members = {m.account_id: m for m in session.scalars(select(WorkspaceMember))}
    writer = next(g for g in grants if g.permission in ("write", "admin"))
    with rt.sessions() as session:
        repo_slug = session.execute(
            select(RepositoryPermission.repository_id).where(RepositoryPermission.id == writer.id)
        ).scalar_one()
        from app.models import Repository

        slug = session.get(Repository, repo_slug).slug  # type: ignore[union-attr]
    readers = {
        g.principal
        for g in grants
        if g.repository_id == writer.repository_id and g.permission in ("write", "admin")
    }
    reader = next(a for a in members if a not in readers)
    client: FlaskClient = create_app(runtime=rt).test_client()
    path = f"/api/repositories/acme/{slug}/pipelines"
    body = {"branch": sim.repositories()[0]["mainbranch"]}
    for repo in sim.repositories():
        if repo["slug"] == slug:
            body = {"branch": repo["mainbranch"]}

    def user_ref(account: str) -> str:
        return f"user:default/{members[account].nickname}"

    def post(bearer: str) -> Any:
        return client.post(path, json=body, headers={"Authorization": f"Bearer {bearer}"})

    before = sim.stats()["calls"]["pipelines"]
    allowed = post(token(key, user_ref(writer.principal)))
    assert allowed.status_code == 201, allowed.json
    assert allowed.json["state"] == "PENDING"
    assert sim.stats()["calls"]["pipelines"] == before + 1
    assert post(token(key, user_ref(reader))).status_code == 403
    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert post(token(forged_key, user_ref(writer.principal))).status_code == 401
    assert (
        post(token(key, user_ref(writer.principal), exp=int(time.time()) - 60)).status_code == 401
    )
    assert post(token(key, user_ref(writer.principal), aud="someone-else")).status_code == 401
    assert post("not-a-jwt").status_code == 401
    assert sim.stats()["calls"]["pipelines"] == before + 1  # refusals cost Bitbucket nothing
    assert len(audits(rt, "pipeline_trigger_allowed")) == 1
    # Only a proven user's refusal is stored; bad tokens are counted in /metrics instead.
    refused = audits(rt, "pipeline_trigger_refused")
    assert [r.detail["status"] for r in refused] == [403]


def group_listing(sim: SimProcess) -> list[dict[str, Any]]:
    response = requests.get(
        f"{sim.url}/1.0/groups/acme", headers={"Authorization": "Bearer sim-token"}, timeout=10
    )
    response.raise_for_status()
    groups: list[dict[str, Any]] = response.json()
    return groups


def test_a_groups_listing_that_suddenly_shrinks_removes_no_group(
    people: tuple[SimProcess, Runtime],
) -> None:
    sim, rt = people
    first = sync_people(rt)
    assert first.counts["groups"] >= 3
    team = {name: e for name, e in live(rt, "Group").items() if e.source == "people"}
    slugs = [g["slug"] for g in group_listing(sim)]
    for slug in slugs[:-1]:
        assert sim.admin("DELETE", f"groups/{slug}").status_code == 204
    run = sync_people(rt)
    assert run.counts["groups"] == 1
    assert run.error and "group sweep refused" in run.error
    assert audits(rt, "group_removed") == []
    assert set(team) <= set(live(rt, "Group"))
    with rt.sessions() as session:
        assert all(g.removed_at is None for g in session.scalars(select(BitbucketGroup)))


def test_one_group_gone_is_removed_with_an_audit_row(people: tuple[SimProcess, Runtime]) -> None:
    sim, rt = people
    sync_people(rt)
    slug = group_listing(sim)[0]["slug"]
    assert sim.admin("DELETE", f"groups/{slug}").status_code == 204
    run = sync_people(rt)
    assert run.error is None
    (row,) = audits(rt, "group_removed")
    assert row.subject == slug
