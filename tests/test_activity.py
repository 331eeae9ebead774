"""Pull requests, pipelines and statuses: reconciliation against the live simulator (webhooks
lost), the health summary, retention, and the API Backstage plugins call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select

from app.db import session_scope
from app.models import CommitStatus, Pipeline, PullRequest, Repository, utcnow
from app.runtime import Runtime
from app.sync.activity import ActivityReconcile, prune_old_activity
from app.sync.workspace import WorkspaceSync
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import api_client

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]


def reconcile(rt: Runtime) -> Any:
    with rt.sessions() as session:
        return ActivityReconcile(rt.bitbucket(), session, session.commit).run("acme")


def sim_pull_requests(sim: SimProcess, slug: str) -> dict[int, str]:
    url: str | None = (
        f"{sim.api_url}/repositories/acme/{slug}/pullrequests"
        "?state=OPEN&state=MERGED&state=DECLINED&state=SUPERSEDED&pagelen=50"
    )
    found: dict[int, str] = {}
    while url:
        body = requests.get(url, headers={"Authorization": "Bearer sim-token"}, timeout=10).json()
        found.update({pr["id"]: pr["state"] for pr in body["values"]})
        url = body.get("next")
    return found


@pytest.fixture
def synced(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> tuple[SimProcess, Runtime, FlaskClient]:
    sim = sim_factory(repos=12, seed=8, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=migrated_url, BITBUCKET_RATE_LIMIT_PER_HOUR="100000")
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    return sim, rt, api_client(create_app(runtime=rt))


def test_reconciliation_alone_follows_a_pull_request_lifecycle(
    synced: tuple[SimProcess, Runtime, FlaskClient],
) -> None:
    sim, rt, client = synced
    first = reconcile(rt)
    assert first.status == "succeeded" and first.counts["repositories"] == 12
    slug = sim.repositories()[0]["slug"]
    with rt.sessions() as session:
        stored = {
            pr.number: pr.state
            for pr in session.scalars(
                select(PullRequest)
                .join(Repository, PullRequest.repository_id == Repository.id)
                .where(Repository.slug == slug)
            )
        }
    assert stored == sim_pull_requests(sim, slug)

    sim.reset_stats()
    quiet = reconcile(rt)
    # Nothing changed: one pull request page per repository.
    assert sim.stats()["calls"]["pullrequests"] == 12
    assert quiet.counts["pull_requests"] == 0

    sim.admin("POST", f"repos/{slug}/branches", json={"name": "feature/lifecycle"})
    opened = sim.admin(
        "POST",
        f"repos/{slug}/pullrequests",
        json={"source": "feature/lifecycle", "title": "Lifecycle"},
    ).json()
    number = opened["id"]
    reconcile(rt)
    page = client.get(f"/api/repositories/acme/{slug}/pullrequests?state=OPEN").json
    assert any(p["id"] == number and p["title"] == "Lifecycle" for p in page["items"])
    sim.admin("POST", f"repos/{slug}/pullrequests/{number}/update", json={"title": "Renamed"})
    sim.admin("POST", f"repos/{slug}/pullrequests/{number}/merge", json={})
    reconcile(rt)
    merged = client.get(f"/api/repositories/acme/{slug}/pullrequests?state=MERGED").json
    pr = next(p for p in merged["items"] if p["id"] == number)
    assert pr["title"] == "Renamed" and pr["state"] == "MERGED" and pr["merge_commit"]
    assert pr["closed_on"] is not None


def test_pipelines_and_statuses_feed_the_health_summary(
    synced: tuple[SimProcess, Runtime, FlaskClient],
) -> None:
    sim, rt, client = synced
    repo = next(r for r in sim.repositories() if r["catalog_layout"] == "none")
    slug, branch = repo["slug"], repo["mainbranch"]
    auth = {"Authorization": "Bearer sim-token"}
    results = ["SUCCESSFUL", "FAILED", "SUCCESSFUL", "SUCCESSFUL"]
    for result in results:
        created = requests.post(
            f"{sim.api_url}/repositories/acme/{slug}/pipelines/",
            headers=auth,
            timeout=10,
            json={
                "target": {"type": "pipeline_ref_target", "ref_type": "branch", "ref_name": branch}
            },
        )
        assert created.status_code == 201, created.text
        uuid = created.json()["uuid"]
        sim.admin("POST", f"repos/{slug}/pipelines/{uuid}/finish", json={"result": result})
    sim.admin(
        "POST",
        f"repos/{slug}/statuses",
        json={
            "key": "ci-build",
            "state": "FAILED",
            "refname": branch,
            "url": "https://ci.example.com/build/1",
        },
    )
    reconcile(rt)
    health = client.get(f"/api/repositories/acme/{slug}/health").json
    with rt.sessions() as session:
        completed = session.scalars(
            select(Pipeline.result)
            .join(Repository, Pipeline.repository_id == Repository.id)
            .where(Repository.slug == slug, Pipeline.state == "COMPLETED")
        ).all()
    assert health["pipeline_runs"] == len(completed) >= len(results)
    expected = sum(r == "SUCCESSFUL" for r in completed) / len(completed)
    assert health["pipeline_success_rate"] == pytest.approx(expected, abs=0.001)
    assert health["last_build"] is not None
    assert {b["key"] for b in health["builds_on_head"]} >= {"ci-build"}
    assert health["open_pull_requests"] == len(
        [s for s in sim_pull_requests(sim, slug).values() if s == "OPEN"]
    )
    failed = client.get(f"/api/repositories/acme/{slug}/pipelines?result=failed").json["items"]
    assert failed and all(p["result"] == "FAILED" for p in failed)
    statuses = client.get(f"/api/repositories/acme/{slug}/statuses?key=ci-build").json["items"]
    assert statuses[0]["state"] == "FAILED"

    # The same health, reached through a catalog entity's annotations.
    entity = next(
        e
        for e in client.get("/catalog/entities?kind=Component").json["items"]
        if e["metadata"]["annotations"].get("bitbucket.com/project-slug") == f"acme/{slug}"
    )
    by_entity = client.get(
        f"/api/entities/component/{entity['metadata'].get('namespace', 'default')}/"
        f"{entity['metadata']['name']}/health"
    ).json
    assert by_entity["repository"] == f"acme/{slug}"
    assert by_entity["pipeline_success_rate"] == health["pipeline_success_rate"]


def test_the_api_needs_a_token_and_says_what_is_missing(
    synced: tuple[SimProcess, Runtime, FlaskClient],
) -> None:
    sim, rt, client = synced
    slug = sim.repositories()[0]["slug"]
    anonymous = create_app(runtime=rt).test_client()
    assert anonymous.get(f"/api/repositories/acme/{slug}/health").status_code == 401
    wrong = anonymous.get(
        f"/api/repositories/acme/{slug}/health", headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401 and wrong.json["error"] == "unauthorized"
    assert anonymous.get("/api/openapi.json").status_code == 200
    assert client.get("/api/repositories/acme/nope/health").status_code == 404
    assert client.get("/api/entities/component/default/nope/health").status_code == 404
    bad = client.get(f"/api/repositories/acme/{slug}/pullrequests?state=MAYBE")
    assert bad.status_code == 400 and "state" in bad.json["fields"]
    first = client.get(f"/api/repositories/acme/{slug}/health")
    again = client.get(
        f"/api/repositories/acme/{slug}/health", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304


def test_pull_request_pages_follow_next_offset(
    synced: tuple[SimProcess, Runtime, FlaskClient],
) -> None:
    sim, rt, client = synced
    reconcile(rt)
    slug = max(sim.repositories(), key=lambda r: len(sim_pull_requests(sim, r["slug"])))["slug"]
    seen: list[int] = []
    offset: int | None = 0
    while offset is not None:
        page = client.get(f"/api/repositories/acme/{slug}/pullrequests?limit=2&offset={offset}")
        seen += [p["id"] for p in page.json["items"]]
        offset = page.json["next_offset"]
    assert sorted(seen) == sorted(sim_pull_requests(sim, slug))


def test_retention_prunes_old_pipelines_and_statuses(
    synced: tuple[SimProcess, Runtime, FlaskClient],
) -> None:
    _, rt, _ = synced
    old = utcnow() - timedelta(days=200)
    with session_scope(rt.sessions) as session:
        repo = session.scalars(select(Repository)).first()
        assert repo is not None
        session.add(
            Pipeline(
                uuid="{old-pipeline}",
                repository_id=repo.id,
                state="COMPLETED",
                result="SUCCESSFUL",
                created_on=old,
                completed_on=old,
            )
        )
        for i, when in enumerate((old, old + timedelta(days=1))):
            session.add(
                CommitStatus(
                    repository_id=repo.id,
                    commit_hash=f"{i}" * 40,
                    key="ci",
                    state="SUCCESSFUL",
                    updated_on=when,
                )
            )
    with session_scope(rt.sessions) as session:
        pruned = prune_old_activity(session, retention_days=90)
    assert pruned == {"pipelines": 1, "statuses": 1}
    with rt.sessions() as session:
        kept = session.scalars(select(CommitStatus).where(CommitStatus.key == "ci")).all()
        assert [s.commit_hash for s in kept] == ["1" * 40]  # the newest of the key stays


def test_a_health_lookup_survives_a_connection_the_database_dropped(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_postgres_url: str
) -> None:
    """Health lookups run on connections without a ping at checkout: one the server ended
    (a restart, a failover) is replaced, and the lookup answers as before."""
    postgres_url = migrated_postgres_url
    sim = sim_factory(repos=4, seed=8, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=postgres_url, BITBUCKET_RATE_LIMIT_PER_HOUR="100000")
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    client = api_client(create_app(runtime=rt))
    slug = sim.repositories()[0]["slug"]
    before = client.get(f"/api/repositories/acme/{slug}/health")
    assert before.status_code == 200
    with rt.engine.connect() as connection:
        connection.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    after = client.get(f"/api/repositories/acme/{slug}/health")
    assert after.status_code == 200, after.json
    assert after.json["repository"] == before.json["repository"] == f"acme/{slug}"
    assert after.json["open_pull_requests"] == before.json["open_pull_requests"]
    assert client.get("/api/repositories/acme/no-such-repo/health").status_code == 404
    rt.engine.dispose()
    rt.statement_engine.dispose()
