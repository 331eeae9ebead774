"""Same seed and size, same workspace; live pipelines through the API."""

from __future__ import annotations

import pytest
import requests

from bitbucket_sim.generate import build_workspace
from bitbucket_sim.testing import SimProcess

pytestmark = pytest.mark.slow


def listing(sim: SimProcess) -> list[dict]:
    url = f"{sim.api_url}/repositories/{sim.workspace}?pagelen=100&fields=-values.links"
    values: list[dict] = []
    while url:
        page = requests.get(url, timeout=10).json()
        values += page["values"]
        url = page.get("next")
    for value in values:  # links embed the port, which differs between the two processes
        value.pop("project", None)
        value.pop("owner", None)
        value.pop("workspace", None)
    return values


def test_two_processes_with_the_same_seed_serve_the_same_workspace() -> None:
    with SimProcess(repos=30, seed=42) as first, SimProcess(repos=30, seed=42) as second:
        assert listing(first) == listing(second)
        assert first.repositories() == second.repositories()


def test_another_seed_gives_another_workspace() -> None:
    one = build_workspace("acme", 10, seed=1)
    other = build_workspace("acme", 10, seed=2)
    assert [r.uuid for r in one.repositories.values()] != [
        r.uuid for r in other.repositories.values()
    ]


def test_generated_workspace_matches_the_brief() -> None:
    ws = build_workspace("acme", 150, seed=8)
    assert len(ws.projects) == 10
    assert 10 <= len(ws.member_ids) <= 40
    assert 2 <= len(ws.groups) <= 5
    assert all(a.account_id.startswith("557058:") for a in ws.accounts.values())
    for repo in ws.repositories.values():
        assert 2 <= len(repo.branches) <= 6
        assert repo.mainbranch in ("main", "master")
        assert repo.pullrequests
        assert {"README.md", "src/main.py"} <= set(repo.head.files)
    assert any(r.name != r.slug for r in ws.repositories.values())


def test_pipeline_is_created_through_the_api_and_finished_by_admin() -> None:
    with SimProcess(repos=3, seed=5) as sim:
        repo = sim.repositories()[0]
        url = f"{sim.api_url}/repositories/{sim.workspace}/{repo['slug']}/pipelines/"
        target = {
            "type": "pipeline_ref_target",
            "ref_type": "branch",
            "ref_name": repo["mainbranch"],
        }
        created = requests.post(url, json={"target": target}, timeout=10)
        assert created.status_code == 201
        pipeline = created.json()
        assert pipeline["state"]["name"] == "PENDING"
        assert pipeline["target"]["commit"]["hash"] == repo["head"]
        finish = f"repos/{repo['slug']}/pipelines/{pipeline['uuid']}/finish"
        finished = sim.admin("POST", finish, json={"result": "FAILED"}).json()
        assert finished["state"]["name"] == "COMPLETED"
        assert finished["state"]["result"]["name"] == "FAILED"
        newest = requests.get(url, params={"sort": "-created_on"}, timeout=10).json()["values"][0]
        assert newest["uuid"] == pipeline["uuid"]
        bad = requests.post(url, json={"target": {"type": "nope"}}, timeout=10)
        assert bad.status_code == 400
