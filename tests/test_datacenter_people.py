"""People and access of a Data Center source against the simulator's Data Center flavour, on
SQLite and PostgreSQL: users and groups as valid Backstage entities, project and repository
grants in Cloud's permission table and API, a removed grant revoked with an audit row,
refused admin endpoints keeping everything, and the mass-removal guard."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from sqlalchemy import select

from app.catalog.datacenter_entities import DC_USERNAME, server_namespace
from app.models import (
    AccessAudit,
    BitbucketGroup,
    CatalogEntity,
    Repository,
    RepositoryPermission,
    SyncRun,
    WorkspaceMember,
)
from app.runtime import Runtime
from app.sync.datacenter_people import DataCenterPeopleSync
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.backstage_validator import validate_entities
from tests.conftest import api_client
from tests.identity_support import ISSUER, jwks_server, user_token
from tests.test_datacenter_catalog import dc_env, dc_sync

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]


def sync_people(rt: Runtime) -> SyncRun:
    with rt.sessions() as session:
        server = rt.datacenter_settings
        return DataCenterPeopleSync(
            rt.datacenter(), session, session.commit, rt.settings, server
        ).run()


def live(rt: Runtime, kind: str) -> dict[str, CatalogEntity]:
    with rt.sessions() as session:
        rows = session.scalars(
            select(CatalogEntity).where(
                CatalogEntity.kind == kind,
                CatalogEntity.deleted_at.is_(None),
                CatalogEntity.source == "people",
            )
        )
        return {e.name: e for e in rows}


def audits(rt: Runtime, action: str) -> list[AccessAudit]:
    with rt.sessions() as session:
        return list(session.scalars(select(AccessAudit).where(AccessAudit.action == action)))


def grants(rt: Runtime) -> list[RepositoryPermission]:
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(RepositoryPermission).where(RepositoryPermission.removed_at.is_(None))
            )
        )


@pytest.fixture
def dc_people(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> tuple[SimProcess, Runtime, Runtime]:
    """An admin runtime and a non-admin one on the same database, after a catalog sync."""
    sim = sim_factory(
        flavor="datacenter", repos=8, seed=12, access_token="dc-token", non_admin_token="user-token"
    )
    admin = runtime_for(**dc_env(sim, DATABASE_URL=migrated_url))
    user = runtime_for(**dc_env(sim, DATABASE_URL=migrated_url, BITBUCKET_DC_TOKEN="user-token"))
    assert dc_sync(admin).ok
    return sim, admin, user


def test_users_groups_and_grants_are_mirrored(
    dc_people: tuple[SimProcess, Runtime, Runtime],
) -> None:
    sim, rt, _ = dc_people
    run = sync_people(rt)
    assert run.status == "succeeded" and run.error is None, run.error
    host = rt.datacenter_settings.host
    assert run.workspace == host
    users, groups = live(rt, "User"), live(rt, "Group")
    assert len(users) == run.counts["members"] > 0
    assert len(groups) == run.counts["groups"] > 0
    namespace = server_namespace(host)
    user = next(iter(users.values()))
    assert user.namespace == namespace
    assert user.body["metadata"]["annotations"][DC_USERNAME] == user.name
    assert "@" in user.body["spec"]["profile"]["email"]
    members = {m for g in groups.values() for m in g.body["spec"]["members"]}
    assert members and members <= set(users)
    assert any(u.body["spec"]["memberOf"] for u in users.values())
    assert validate_entities([e.body for e in (*users.values(), *groups.values())]) == []
    with rt.sessions() as session:
        stored = session.scalars(select(BitbucketGroup)).all()
        assert {g.slug for g in stored} and all(g.members is not None for g in stored)
    rows = grants(rt)
    assert run.counts["permissions"] == len(rows) > 0
    assert {r.principal_type for r in rows} == {"user", "group"}
    assert {r.permission for r in rows} <= {"read", "write", "admin"}
    # The simulator's first member administers every project: admin on every repository.
    with rt.sessions() as session:
        repos = session.scalars(select(Repository)).all()
        everywhere = {
            principal
            for principal in {r.principal for r in rows if r.principal_type == "user"}
            if {
                r.repository_id
                for r in rows
                if r.principal == principal and r.permission == "admin"
            }
            == {r.id for r in repos}
        }
        assert len(everywhere) == 1  # project grants reach every repository of the project
        admin_id = everywhere.pop()
        admin = session.scalars(
            select(WorkspaceMember).where(WorkspaceMember.account_id == admin_id)
        ).one()

    client = api_client(create_app(runtime=rt))
    mine = client.get(f"/api/permissions?user={admin.nickname}").json
    assert mine["user"] == admin_id
    assert {i["repository"] for i in mine["items"]} >= {r.full_name for r in repos}
    assert mine["groups"]  # group grants of the server's groups are found too
    assert any(i["principal_type"] == "group" for i in mine["items"])
    theirs = client.get(f"/api/repositories/{repos[0].full_name}/permissions").json["items"]
    assert any(i["principal"] == admin_id and i["permission"] == "admin" for i in theirs)
    assert any(i["principal_type"] == "group" for i in theirs)
    assert client.get(f"/api/repositories/{host}/NOPE/x/permissions").status_code == 404
    assert sim.stats()["calls"]["permissions"] > 0


def test_a_removed_user_is_revoked_and_audited(
    dc_people: tuple[SimProcess, Runtime, Runtime],
) -> None:
    sim, rt, _ = dc_people
    sync_people(rt)
    granted = [g for g in grants(rt) if g.principal_type == "user" and g.permission != "admin"]
    assert granted
    account = granted[0].principal
    with rt.sessions() as session:
        leaver = session.scalars(
            select(WorkspaceMember).where(WorkspaceMember.account_id == account)
        ).one()
    assert leaver.nickname in sim_usernames(sim)
    assert sim.admin("DELETE", f"members/{leaver.nickname}").status_code < 300
    run = sync_people(rt)
    assert run.error is None, run.error
    assert run.counts["removed_members"] == 1
    assert run.counts["revoked_permissions"] == len([g for g in granted if g.principal == account])
    assert leaver.nickname not in live(rt, "User")
    revoked = audits(rt, "permission_revoked")
    assert {r.subject for r in revoked} == {account}
    assert [r.subject for r in audits(rt, "member_removed")] == [account]
    assert all(g.principal != account for g in grants(rt))


def sim_usernames(sim: SimProcess) -> list[str]:
    """The simulator's users, by username (its admin API takes them as account keys)."""
    response = requests.get(
        f"{sim.url}/rest/api/latest/users",
        params={"limit": 1000},
        headers={"Authorization": "Bearer dc-token"},
        timeout=10,
    )
    response.raise_for_status()
    return [str(u["name"]) for u in response.json()["values"]]


def test_refused_admin_endpoints_keep_everything(
    dc_people: tuple[SimProcess, Runtime, Runtime],
) -> None:
    sim, admin_rt, user_rt = dc_people
    first = sync_people(admin_rt)
    before = {(g.repository_id, g.principal_type, g.principal) for g in grants(admin_rt)}
    users, groups = set(live(admin_rt, "User")), set(live(admin_rt, "Group"))
    sim.set_config(admin_reads_need_admin=True)
    run = sync_people(user_rt)
    assert run.status == "succeeded" and run.error is None
    assert run.counts["members"] == first.counts["members"]  # /users is open to any user
    assert run.counts["groups"] == "unavailable"
    assert run.counts["revoked_permissions"] == 0
    assert any("permissions" in w and "skipped" in w for w in run.counts["warnings"])
    assert any(w.startswith("groups skipped") for w in run.counts["warnings"])
    assert {(g.repository_id, g.principal_type, g.principal) for g in grants(user_rt)} == before
    assert set(live(user_rt, "User")) == users and set(live(user_rt, "Group")) == groups
    assert audits(user_rt, "permission_revoked") == []
    assert audits(user_rt, "group_removed") == []


def test_a_refused_user_listing_removes_no_one(
    dc_people: tuple[SimProcess, Runtime, Runtime],
) -> None:
    sim, rt, _ = dc_people
    first = sync_people(rt)
    users = set(live(rt, "User"))
    fault = {"path_contains": "/rest/api/latest/users", "status": 403, "times": 3}
    assert sim.admin("POST", "faults", json=fault).status_code == 201
    run = sync_people(rt)
    assert run.status == "succeeded" and run.error is None
    assert run.counts["members"] == "unavailable"
    assert any(w.startswith("users skipped") for w in run.counts["warnings"])
    assert run.counts["groups"] == first.counts["groups"]
    assert set(live(rt, "User")) == users
    assert audits(rt, "member_removed") == []
    with rt.sessions() as session:
        assert all(m.removed_at is None for m in session.scalars(select(WorkspaceMember)))


def test_a_deleted_group_is_removed_and_its_grants_revoked_with_audit_rows(
    dc_people: tuple[SimProcess, Runtime, Runtime],
) -> None:
    sim, rt, _ = dc_people
    sync_people(rt)
    with rt.sessions() as session:
        slugs = sorted(g.slug for g in session.scalars(select(BitbucketGroup)))
    assert len(slugs) >= 3
    gone = slugs[0]
    held = [g for g in grants(rt) if g.principal_type == "group" and g.principal == gone]
    assert held
    assert sim.admin("DELETE", f"groups/{gone}").status_code == 204
    run = sync_people(rt)
    assert run.error is None, run.error
    assert [r.subject for r in audits(rt, "group_removed")] == [gone]
    revoked = audits(rt, "permission_revoked")
    assert len(revoked) == len(held) == run.counts["revoked_permissions"]
    assert all(r.subject == gone and r.detail["principal_type"] == "group" for r in revoked)
    assert f"group-{gone}" not in live(rt, "Group")


def test_removing_most_users_at_once_is_refused(
    dc_people: tuple[SimProcess, Runtime, Runtime],
) -> None:
    sim, rt, _ = dc_people
    first = sync_people(rt)
    usernames = sim_usernames(sim)
    for username in usernames[: int(len(usernames) * 0.8)]:
        sim.admin("DELETE", f"members/{username}")
    run = sync_people(rt)
    assert run.error and "member sweep refused" in run.error
    assert len(live(rt, "User")) == first.counts["members"]
    assert audits(rt, "member_removed") == []
    with rt.sessions() as session:
        members = session.scalars(select(WorkspaceMember)).all()
        assert members and all(m.removed_at is None for m in members)


def test_the_pipeline_trigger_answers_400_for_a_data_center_repository(
    dc_people: tuple[SimProcess, Runtime, Runtime],
    runtime_for: RuntimeFactory,
    migrated_url: str,
) -> None:
    sim, admin_rt, _ = dc_people
    sync_people(admin_rt)
    with jwks_server() as (url, key):
        rt = runtime_for(
            **dc_env(
                sim,
                DATABASE_URL=migrated_url,
                BBSYNC_BACKSTAGE_JWKS_URL=url,
                BBSYNC_BACKSTAGE_ISSUER=ISSUER,
            )
        )
        with rt.sessions() as session:
            repo = session.scalars(select(Repository)).first()
            grant = session.scalars(
                select(RepositoryPermission).where(
                    RepositoryPermission.principal_type == "user",
                    RepositoryPermission.permission == "admin",
                )
            ).first()
            assert repo is not None and grant is not None
            member = session.scalars(
                select(WorkspaceMember).where(WorkspaceMember.account_id == grant.principal)
            ).one()
        client = create_app(runtime=rt).test_client()
        path = f"/api/repositories/{repo.full_name}/pipelines"
        assert "/" in repo.full_name.rsplit("/", 1)[0]
        bearer = user_token(key, f"user:default/{member.nickname}")
        before = sim.stats()["calls_total"]
        answer = client.post(
            path, json={"branch": "main"}, headers={"Authorization": f"Bearer {bearer}"}
        )
        assert answer.status_code == 400, answer.json
        assert answer.json["error"] == "not_supported"
        assert "Data Center has no Pipelines" in answer.json["message"]
        assert client.post(path, json={"branch": "main"}).status_code == 401
        assert sim.stats()["calls_total"] == before  # Bitbucket was never asked
    (refused,) = audits(rt, "pipeline_trigger_refused")
    assert refused.detail["status"] == 400 and refused.workspace == repo.full_name.rsplit("/", 1)[0]
