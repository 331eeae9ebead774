"""Data Center pull requests, build statuses and the per-user token bucket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from bitbucket_sim.testing import SimProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dc() -> Iterator[SimProcess]:
    with SimProcess(flavor="datacenter", repos=12, seed=9) as process:
        yield process


def repo_url(dc: SimProcess, summary: dict) -> str:
    return f"{dc.rest_url}/projects/{summary['project_key']}/repos/{summary['slug']}"


def test_pull_request_states(dc: SimProcess, http: requests.Session) -> None:
    counts: dict[str, int] = {}
    totals = 0
    for summary in dc.repositories():
        url = f"{repo_url(dc, summary)}/pull-requests"
        every = http.get(url, params={"state": "ALL", "limit": 1000}, timeout=10).json()["values"]
        totals += len(every)
        for state in ("OPEN", "MERGED", "DECLINED"):
            body = http.get(url, params={"state": state}, timeout=10).json()
            assert all(pr["state"] == state for pr in body["values"])
            counts[state] = counts.get(state, 0) + body["size"]
        default = http.get(url, timeout=10).json()["values"]
        assert [pr["id"] for pr in default] == [pr["id"] for pr in every if pr["state"] == "OPEN"]
    assert sum(counts.values()) == totals and all(counts.values())
    response = http.get(url, params={"state": "SUPERSEDED"}, timeout=10)
    assert response.status_code == 400 and response.json()["errors"][0]["context"] == "state"


def test_pull_request_shape_and_merge(dc: SimProcess, http: requests.Session) -> None:
    summary = dc.repositories()[0]
    slug = summary["slug"]
    dc.admin("POST", f"repos/{slug}/branches", json={"name": "feature/dc-pr"})
    dc.admin("POST", f"repos/{slug}/push", json={"branch": "feature/dc-pr", "files": {"f": "1"}})
    members = http.get(f"{dc.rest_url}/users", timeout=10).json()["values"]
    reviewer = members[1]["name"]
    opened = dc.admin(
        "POST",
        f"repos/{slug}/pullrequests",
        json={"source": "feature/dc-pr", "reviewers": [reviewer]},
    ).json()
    url = f"{repo_url(dc, summary)}/pull-requests/{opened['id']}"
    dc.admin("POST", f"repos/{slug}/pullrequests/{opened['id']}/approve", json={"actor": reviewer})
    pr = http.get(url, timeout=10).json()
    assert pr["state"] == "OPEN" and pr["open"] is True and pr["closed"] is False
    assert pr["fromRef"]["id"] == "refs/heads/feature/dc-pr"
    assert pr["toRef"]["displayId"] == summary["mainbranch"]
    assert pr["fromRef"]["repository"]["slug"] == slug
    assert pr["author"]["role"] == "AUTHOR"
    (review,) = pr["reviewers"]
    assert review["user"]["name"] == reviewer
    assert (review["approved"], review["status"]) == (True, "APPROVED")
    dc.admin("POST", f"repos/{slug}/pullrequests/{opened['id']}/merge")
    merged = http.get(url, timeout=10).json()
    assert merged["state"] == "MERGED" and merged["closed"] is True and "closedDate" in merged
    missing = http.get(f"{repo_url(dc, summary)}/pull-requests/9999", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["exceptionName"].endswith("NoSuchPullRequestException")


def test_newest_first_by_update_or_by_creation(dc: SimProcess, http: requests.Session) -> None:
    summary = dc.repositories()[2]
    slug = summary["slug"]
    dc.admin("POST", f"repos/{slug}/branches", json={"name": "feature/order"})
    first = dc.admin("POST", f"repos/{slug}/pullrequests", json={"source": "feature/order"}).json()
    second = dc.admin("POST", f"repos/{slug}/pullrequests", json={"source": "feature/order"}).json()
    dc.admin("POST", f"repos/{slug}/pullrequests/{first['id']}/update", json={"title": "Touched"})
    url = f"{repo_url(dc, summary)}/pull-requests"

    def ids(order: str) -> list[int]:
        body = http.get(url, params={"order": order, "limit": 1000}, timeout=10).json()
        return [pr["id"] for pr in body["values"] if pr["id"] in (first["id"], second["id"])]

    assert ids("NEWEST") == [first["id"], second["id"]]
    assert ids("OLDEST") == [second["id"], first["id"]]
    dc.set_config(pr_newest_by="created")
    try:
        assert ids("NEWEST") == [second["id"], first["id"]]
    finally:
        dc.set_config(pr_newest_by="updated")


def test_build_statuses_by_commit(dc: SimProcess, http: requests.Session) -> None:
    summary = dc.repositories()[1]
    slug, head = summary["slug"], summary["head"]
    dc.admin("POST", f"repos/{slug}/statuses", json={"key": "dc-ci", "state": "STOPPED"})
    legacy = http.get(f"{dc.url}/rest/build-status/1.0/commits/{head}", timeout=10).json()
    modern = http.get(f"{repo_url(dc, summary)}/commits/{head}/builds", timeout=10).json()
    assert legacy["isLastPage"] and modern["isLastPage"]
    by_key = {b["key"]: b for b in legacy["values"]}
    assert by_key["dc-ci"]["state"] == "FAILED"  # the legacy API has no CANCELLED
    assert {b["key"]: b["state"] for b in modern["values"]}["dc-ci"] == "CANCELLED"
    assert set(by_key["dc-ci"]) == {"state", "key", "name", "url", "description", "dateAdded"}
    assert len(modern["values"]) == len(legacy["values"]) >= 2
    stats = http.get(f"{dc.url}/rest/build-status/latest/commits/stats/{head}", timeout=10).json()
    assert sum(stats.values()) == len(legacy["values"])
    assert (
        http.get(f"{dc.url}/rest/build-status/1.0/commits/{'0' * 40}", timeout=10).json()["values"]
        == []
    )


# -- the token bucket --------------------------------------------------------------------------


def test_token_bucket_answers_429_with_retry_after(http: requests.Session) -> None:
    with SimProcess(flavor="datacenter", repos=3, seed=2, rate_limit="1/m", burst=3) as dc:
        url = f"{dc.rest_url}/projects"
        alice, bob = ("alice", "x"), ("bob", "y")
        assert [http.get(url, auth=alice, timeout=10).status_code for _ in range(3)] == [200] * 3
        limited = http.get(url, auth=alice, timeout=10)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.json()["errors"][0]["message"]
        assert http.get(url, auth=bob, timeout=10).status_code == 200  # one bucket per user
        assert http.get(url, timeout=10).status_code == 200  # anonymous: never limited
        assert dc.stats()["rate_limited"] == 1
        dc.reset_stats()
        assert http.get(url, auth=alice, timeout=10).status_code == 200


def test_rate_limiting_is_off_by_default(dc: SimProcess, http: requests.Session) -> None:
    url = f"{dc.rest_url}/projects"
    statuses = {http.get(url, auth=("carol", "z"), timeout=10).status_code for _ in range(80)}
    assert statuses == {200}
    assert dc.stats()["rate_limited"] == 0
    dc.set_config(rate_limit="1/h", burst=2)  # an admin turns it on
    try:
        answers = [http.get(url, auth=("carol", "z"), timeout=10) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert int(answers[2].headers["Retry-After"]) > 60  # one token an hour
    finally:
        dc.set_config(rate_limit="off")
    assert http.get(url, auth=("carol", "z"), timeout=10).status_code == 200


def test_stats_count_calls_per_family(dc: SimProcess, http: requests.Session) -> None:
    summary = dc.repositories()[3]
    assert summary["catalog_paths"] == sorted(
        p for p in summary["files"] if p.endswith("catalog-info.yaml")
    )
    dc.reset_stats()
    base = repo_url(dc, summary)
    for path in (
        f"{dc.rest_url}/projects",
        f"{dc.rest_url}/repos",
        base,
        f"{base}/raw/README.md",
        f"{base}/branches",
        f"{base}/default-branch",
        f"{base}/commits?limit=1",
        f"{base}/pull-requests",
        f"{dc.url}/rest/build-status/1.0/commits/{summary['head']}",
        f"{dc.rest_url}/admin/groups",
        f"{base}/permissions/users",
        f"{base}/webhooks",
        f"{dc.rest_url}/users",
        f"{dc.url}/rest/search/latest/search",
    ):
        http.get(path, timeout=10)
    stats = dc.stats()
    assert stats["calls"] == {
        "projects": 1,
        "repos": 2,
        "refs": 2,
        "raw": 1,
        "files": 0,
        "commits": 1,
        "pullrequests": 1,
        "builds": 1,
        "users": 1,
        "groups": 1,
        "permissions": 1,
        "webhooks": 1,
        "other": 1,
    }
    assert stats["calls_total"] == 14 and stats["rate_limited"] == 0
