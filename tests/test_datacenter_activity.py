"""Data Center activity against the simulator's Data Center flavour: pull requests of every
state and the default branch head's build statuses reconciled into Cloud's rows, served by the
same API under the `{host}/{KEY}` workspace, and the health summary built from them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.db import make_engine, make_session_factory
from app.models import CommitStatus, PullRequest, Repository, SyncRun
from app.runtime import Runtime
from app.sync.datacenter_activity import DataCenterActivityReconcile
from app.task_names import (
    RECONCILE_ACTIVITY,
    RECONCILE_ALL_ACTIVITY,
    RECONCILE_DATACENTER_ACTIVITY,
    enqueue,
    producer,
)
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import api_client, migrate, run_bbsync
from tests.test_datacenter_catalog import dc_env, dc_sync
from tests.test_datacenter_worker import dc_worker_env
from tests.test_worker import WorkerFactory, start_worker  # noqa: F401 - the fixture

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]
AUTH = {"Authorization": "Bearer dc-token"}


def reconcile(rt: Runtime, max_calls: int | None = None) -> SyncRun:
    with rt.sessions() as session:
        return DataCenterActivityReconcile(
            rt.datacenter(), session, session.commit, rt.datacenter_settings, max_calls=max_calls
        ).run_server()


def sim_pull_requests(sim: SimProcess, key: str, slug: str) -> dict[int, str]:
    found: dict[int, str] = {}
    start: int | None = 0
    while start is not None:
        body = requests.get(
            f"{sim.rest_url}/projects/{key}/repos/{slug}/pull-requests",
            params={"state": "ALL", "start": start, "limit": 25},
            headers=AUTH,
            timeout=10,
        ).json()
        found.update({pr["id"]: pr["state"] for pr in body["values"]})
        start = None if body["isLastPage"] else body["nextPageStart"]
    return found


@pytest.fixture
def dc_synced(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> tuple[SimProcess, Runtime, FlaskClient]:
    sim = sim_factory(flavor="datacenter", repos=12, seed=8, access_token="dc-token")
    rt = runtime_for(**dc_env(sim, DATABASE_URL=migrated_url))
    assert dc_sync(rt).ok
    return sim, rt, api_client(create_app(runtime=rt))


def _path(rt: Runtime, repo: dict[str, Any]) -> str:
    return f"/api/repositories/{rt.datacenter_settings.host}/{repo['project_key']}/{repo['slug']}"


def test_reconciliation_follows_a_data_center_pull_request_lifecycle(
    dc_synced: tuple[SimProcess, Runtime, FlaskClient],
) -> None:
    sim, rt, client = dc_synced
    first = reconcile(rt)
    assert first.status == "succeeded" and first.counts["repositories"] == 12
    assert first.counts["pipelines"] == 0  # Data Center has none
    repo = next(
        r for r in sim.repositories() if sim_pull_requests(sim, r["project_key"], r["slug"])
    )
    key, slug = repo["project_key"], repo["slug"]
    with rt.sessions() as session:
        stored = {
            pr.number: pr.state
            for pr in session.scalars(
                select(PullRequest)
                .join(Repository, PullRequest.repository_id == Repository.id)
                .where(Repository.slug == slug)
            )
        }
    assert stored == sim_pull_requests(sim, key, slug)

    sim.reset_stats()
    quiet = reconcile(rt)
    # Nothing changed: one pull request page and one build status page per repository.
    calls = sim.stats()["calls"]
    assert calls["pullrequests"] == 12 and calls["builds"] == 12
    assert quiet.counts["pull_requests"] == 0 and quiet.api_calls == 24

    sim.admin("POST", f"repos/{slug}/branches", json={"name": "feature/lifecycle"})
    opened = sim.admin(
        "POST", f"repos/{slug}/pullrequests", json={"source": "feature/lifecycle", "title": "Life"}
    ).json()
    number = opened["id"]
    reconcile(rt)
    page = client.get(f"{_path(rt, repo)}/pullrequests?state=OPEN").json
    mine = next(p for p in page["items"] if p["id"] == number)
    assert mine["title"] == "Life" and mine["source_branch"] == "feature/lifecycle"
    assert mine["destination_branch"] == repo["mainbranch"]
    assert mine["author_account_id"] and mine["created_on"] is not None
    sim.admin("POST", f"repos/{slug}/pullrequests/{number}/update", json={"title": "Renamed"})
    sim.admin("POST", f"repos/{slug}/pullrequests/{number}/merge", json={})
    changed = reconcile(rt)
    assert changed.counts["pull_requests"] == 1
    # The workspace's '/' may also come escaped.
    escaped = _path(rt, repo).replace(f"/{key}/", f"%2F{key}/")
    merged = client.get(f"{escaped}/pullrequests?state=MERGED").json
    pr = next(p for p in merged["items"] if p["id"] == number)
    assert pr["title"] == "Renamed" and pr["state"] == "MERGED" and pr["closed_on"] is not None
    assert client.get(_path(rt, repo)).json["full_name"].endswith(f"/{key}/{slug}")


def test_build_statuses_of_the_head_feed_the_health_summary(
    dc_synced: tuple[SimProcess, Runtime, FlaskClient],
) -> None:
    sim, rt, client = dc_synced
    repo = sim.repositories()[0]
    slug, head, branch = repo["slug"], repo["head"], repo["mainbranch"]
    for key, state in (("ci/build", "SUCCESSFUL"), ("ci/lint", "FAILED"), ("ci/e2e", "STOPPED")):
        sim.admin(
            "POST",
            f"repos/{slug}/statuses",
            json={
                "commit": head,
                "key": key,
                "state": state,
                "refname": branch,
                "url": f"https://ci.example.com/{key}",
                "name": key,
            },
        )
    sim.admin("POST", f"repos/{slug}/branches", json={"name": "feature/open"})
    sim.admin("POST", f"repos/{slug}/pullrequests", json={"source": "feature/open"})
    run = reconcile(rt)
    assert run.counts["statuses"] >= 3

    with rt.sessions() as session:
        rows = {
            s.key: s
            for s in session.scalars(
                select(CommitStatus)
                .join(Repository, CommitStatus.repository_id == Repository.id)
                .where(Repository.slug == slug)
            )
        }
    assert rows["ci/build"].state == "SUCCESSFUL" and rows["ci/build"].commit_hash == head
    assert rows["ci/e2e"].state == "STOPPED"  # Data Center's CANCELLED
    assert rows["ci/lint"].url == "https://ci.example.com/ci/lint"
    assert rows["ci/build"].refname == branch and rows["ci/build"].updated_on is not None

    statuses = client.get(f"{_path(rt, repo)}/statuses?key=ci/lint").json["items"]
    assert [(s["key"], s["state"], s["commit"]) for s in statuses] == [("ci/lint", "FAILED", head)]
    health = client.get(f"{_path(rt, repo)}/health").json
    assert health["open_pull_requests"] >= 1
    assert {b["key"] for b in health["builds_on_head"]} >= {"ci/build", "ci/lint", "ci/e2e"}
    assert health["last_build"]["source"] == "commit_status"
    assert health["pipeline_runs"] == 0 and health["pipeline_success_rate"] is None


def test_a_run_stops_within_its_cap_and_the_next_goes_on(
    dc_synced: tuple[SimProcess, Runtime, FlaskClient],
) -> None:
    _, rt, _ = dc_synced
    first = reconcile(rt, max_calls=10)
    assert first.counts["repositories"] == 5 and first.counts["deferred"] == 7
    assert first.api_calls <= 10
    second = reconcile(rt, max_calls=100)
    # The seven never reconciled come first (the five done are quiet).
    assert second.counts["repositories"] == 12
    with rt.sessions() as session:
        never = session.scalars(
            select(Repository).where(Repository.activity_reconciled_at.is_(None))
        ).all()
    assert never == []


def test_cloud_workspace_routes_are_unchanged(
    dc_synced: tuple[SimProcess, Runtime, FlaskClient],
) -> None:
    _, _, client = dc_synced
    # A Cloud-shaped path still routes (404: not known), a lower-case second segment is a slug.
    answer = client.get("/api/repositories/acme/some-repo/pullrequests")
    assert answer.status_code == 404
    assert "acme/some-repo" in answer.json["message"]


def wait_for_activity(database_url: str, workspace: str, timeout: float = 120) -> SyncRun:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with sessions() as session:
                run = session.scalars(
                    select(SyncRun).where(
                        SyncRun.kind == "activity",
                        SyncRun.workspace == workspace,
                        SyncRun.status == "succeeded",
                    )
                ).first()
                if run is not None:
                    session.expunge(run)
                    return run
            time.sleep(0.3)
    finally:
        engine.dispose()
    raise AssertionError(f"no activity run of {workspace} succeeded within {timeout}s")


def test_beats_activity_job_reconciles_the_data_center_source_through_a_real_worker(
    sim_factory: SimFactory,
    runtime_for: RuntimeFactory,
    postgres_url: str,
    redis_url: str,
    start_worker: WorkerFactory,  # noqa: F811
) -> None:
    migrate(postgres_url)
    sim = sim_factory(flavor="datacenter", repos=10, seed=4, access_token="dc-token")
    rt = runtime_for(**dc_env(sim, DATABASE_URL=postgres_url, REDIS_URL=redis_url))
    assert dc_sync(rt).ok
    start_worker(dc_worker_env(sim, postgres_url, redis_url))
    enqueue(producer(redis_url), RECONCILE_ALL_ACTIVITY)
    run = wait_for_activity(postgres_url, rt.datacenter_settings.host)
    assert run.counts["repositories"] == 10 and run.counts["failures"] == 0
    with rt.sessions() as session:
        stored = session.scalar(select(func.count()).select_from(PullRequest))
    expected = sum(
        len(sim_pull_requests(sim, r["project_key"], r["slug"])) for r in sim.repositories()
    )
    assert stored == expected > 0


def test_a_lost_data_center_activity_run_is_resumed_by_its_task() -> None:
    from workers.tasks.sync import _resume_task

    host = "bitbucket.example.com"
    assert _resume_task("activity", host, host) == RECONCILE_DATACENTER_ACTIVITY
    assert _resume_task("activity", "acme", host) == RECONCILE_ACTIVITY
    assert _resume_task("activity", "acme") == RECONCILE_ACTIVITY


def test_bbsync_sync_activity_reconciles_the_data_center_source_in_a_real_process(
    sim_factory: SimFactory, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(flavor="datacenter", repos=8, seed=6, access_token="dc-token")
    env = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_DC_URL": sim.url,
        "BITBUCKET_DC_TOKEN": "dc-token",
        "BITBUCKET_DC_RATE_PER_SECOND": "500",
        "BITBUCKET_DC_BURST": "50",
    }
    assert run_bbsync("sync", env=env, cwd=tmp_path).returncode == 0
    sim.reset_stats()
    reconciled = run_bbsync("sync", "--activity", env=env, cwd=tmp_path)
    assert reconciled.returncode == 0, reconciled.stderr
    host = sim.url.split("://", 1)[1]
    assert f"{host} activity: succeeded" in reconciled.stdout
    calls = sim.stats()["calls"]
    assert calls["pullrequests"] == 8 and calls["builds"] == 8
