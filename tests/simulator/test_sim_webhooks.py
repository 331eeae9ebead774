"""Webhook deliveries fired by admin changes: headers, signatures, retries and payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest
import requests

from bitbucket_sim.testing import SimProcess

from .receiver import WebhookReceiver, running_receiver

pytestmark = pytest.mark.slow

SECRET = "webhook-secret"


@pytest.fixture(scope="module")
def hooked() -> Iterator[tuple[SimProcess, WebhookReceiver]]:
    with (
        running_receiver() as receiver,
        SimProcess(
            repos=8,
            seed=21,
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            webhook_retry_delay=0.1,
        ) as sim,
    ):
        yield sim, receiver


@pytest.fixture(autouse=True)
def clean(hooked: tuple[SimProcess, WebhookReceiver]) -> None:
    sim, receiver = hooked
    receiver.status = 200
    with receiver.arrived:
        receiver.requests.clear()
    sim.admin("DELETE", "deliveries")


def payload_of(request) -> dict:
    return json.loads(request.body)


def test_push_fires_a_signed_repo_push(hooked) -> None:
    sim, receiver = hooked
    repo = sim.repositories()[0]
    answer = sim.admin(
        "POST",
        f"repos/{repo['slug']}/push",
        json={"files": {"catalog-info.yaml": "kind: Component\n"}, "message": "Edit catalog"},
    )
    assert answer.status_code == 201
    head = answer.json()["hash"]
    (request,) = receiver.wait_for(1)
    headers = request.headers
    assert headers["X-Event-Key"] == "repo:push"
    assert headers["User-Agent"] == "Bitbucket-Webhooks/2.0"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Attempt-Number"] == "1"
    assert headers["X-Request-UUID"] and headers["X-Hook-UUID"]
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature"] == f"sha256={expected}"
    payload = payload_of(request)
    (change,) = payload["push"]["changes"]
    assert change["new"]["name"] == repo["mainbranch"] and change["new"]["type"] == "branch"
    assert change["new"]["target"]["hash"] == head
    assert change["old"]["target"]["hash"] == repo["head"]
    assert change["created"] is False and change["closed"] is False
    assert change["commits"][0]["hash"] == head and change["truncated"] is False
    repository = payload["repository"]
    assert repository["full_name"] == repo["full_name"]
    for absent in ("slug", "mainbranch", "description", "language"):
        assert absent not in repository
    present = [
        "uuid",
        "name",
        "type",
        "is_private",
        "links",
        "owner",
        "project",
        "workspace",
        "website",
        "scm",
    ]
    assert set(present) <= set(repository)
    assert repository["owner"]["type"] == "team"
    assert "username" not in payload["actor"]


def test_long_push_is_truncated_to_five_commits_newest_first(hooked) -> None:
    sim, receiver = hooked
    repo = sim.repositories()[1]
    head = sim.admin("POST", f"repos/{repo['slug']}/push", json={"commits": 7}).json()["hash"]
    change = payload_of(receiver.wait_for(1)[0])["push"]["changes"][0]
    assert change["truncated"] is True and len(change["commits"]) == 5
    assert change["commits"][0]["hash"] == head
    assert change["commits"][0]["date"] > change["commits"][1]["date"]


def test_failing_receiver_gets_three_attempts_with_the_same_request_uuid(hooked) -> None:
    sim, receiver = hooked
    receiver.status = 503
    repo = sim.repositories()[2]
    sim.admin("POST", f"repos/{repo['slug']}/push", json={"files": {"a.txt": "a"}})
    attempts = receiver.wait_for(3)
    assert [r.headers["X-Attempt-Number"] for r in attempts] == ["1", "2", "3"]
    assert len({r.headers["X-Request-UUID"] for r in attempts}) == 1
    assert len({r.body for r in attempts}) == 1
    records = sim.wait_for_deliveries(3)
    assert [(r["attempt"], r["status_code"]) for r in records] == [(1, 503), (2, 503), (3, 503)]
    assert len({r["request_uuid"] for r in records}) == 1


def test_branch_delete_is_a_closed_push_and_tag_has_no_commits(hooked) -> None:
    sim, receiver = hooked
    repo = sim.repositories()[3]
    slug = repo["slug"]
    assert sim.admin("POST", f"repos/{slug}/branches", json={"name": "tmp/x"}).status_code == 201
    assert sim.admin("DELETE", f"repos/{slug}/branches/tmp/x").status_code == 200
    assert sim.admin("POST", f"repos/{slug}/tags", json={"name": "v1.0.0"}).status_code == 201
    created, deleted, tagged = (payload_of(r)["push"]["changes"][0] for r in receiver.wait_for(3))
    assert created["old"] is None and created["created"] is True
    assert deleted["new"] is None and deleted["closed"] is True
    assert tagged["new"]["type"] == "tag" and "commits" not in tagged


def test_rename_fires_repo_updated_and_the_old_slug_404s(hooked) -> None:
    sim, receiver = hooked
    repo = sim.repositories()[4]
    new_slug = repo["slug"] + "-renamed"
    answer = sim.admin(
        "POST", f"repos/{repo['slug']}/rename", json={"name": "Renamed Repo", "slug": new_slug}
    )
    assert answer.status_code == 200 and answer.json()["slug"] == new_slug
    (request,) = receiver.wait_for(1)
    assert request.headers["X-Event-Key"] == "repo:updated"
    changes = payload_of(request)["changes"]
    assert changes["name"] == {"old": repo["name"], "new": "Renamed Repo"}
    assert changes["full_name"]["new"] == f"{sim.workspace}/{new_slug}"
    assert changes["slug"] == {"old": repo["slug"], "new": new_slug}
    base = f"{sim.api_url}/repositories/{sim.workspace}"
    assert requests.get(f"{base}/{repo['slug']}", timeout=10).status_code == 404
    assert requests.get(f"{base}/{new_slug}", timeout=10).status_code == 200


def test_pull_request_lifecycle_events(hooked) -> None:
    sim, receiver = hooked
    repo = sim.repositories()[5]
    source = next(b for b in repo["branches"] if b != repo["mainbranch"])
    pr = sim.admin("POST", f"repos/{repo['slug']}/pullrequests", json={"source": source}).json()
    member = requests.get(f"{sim.api_url}/workspaces/{sim.workspace}/members", timeout=10).json()[
        "values"
    ][1]["user"]["account_id"]
    base = f"repos/{repo['slug']}/pullrequests/{pr['id']}"
    assert sim.admin("POST", f"{base}/approve", json={"user": member}).status_code == 200
    merged = sim.admin("POST", f"{base}/merge").json()
    assert merged["state"] == "MERGED" and len(merged["merge_commit"]["hash"]) == 12
    events = [r.headers["X-Event-Key"] for r in receiver.wait_for(4)]
    assert events == [
        "pullrequest:created",
        "pullrequest:approved",
        "repo:push",
        "pullrequest:fulfilled",
    ]
    fulfilled = payload_of(receiver.requests[3])
    assert set(fulfilled) >= {"pullrequest", "actor", "repository"}
    assert fulfilled["pullrequest"]["closed_by"] is not None
    assert fulfilled["pullrequest"]["updated_on"].endswith("+00:00")
    assert len(fulfilled["pullrequest"]["destination"]["commit"]["hash"]) == 12


def test_commit_status_created_then_updated(hooked) -> None:
    sim, receiver = hooked
    repo = sim.repositories()[6]
    body = {"key": "ci", "state": "INPROGRESS", "url": "https://ci.example.com/1"}
    assert sim.admin("POST", f"repos/{repo['slug']}/statuses", json=body).status_code == 201
    body["state"] = "SUCCESSFUL"
    assert sim.admin("POST", f"repos/{repo['slug']}/statuses", json=body).status_code == 200
    first, second = receiver.wait_for(2)
    assert first.headers["X-Event-Key"] == "repo:commit_status_created"
    assert second.headers["X-Event-Key"] == "repo:commit_status_updated"
    status = payload_of(second)["commit_status"]
    assert status["key"] == "ci" and status["state"] == "SUCCESSFUL"
    assert status["commit"]["hash"] == repo["head"] and len(status["commit"]["hash"]) == 40


def test_registered_repository_hook_receives_its_events_unsigned(hooked) -> None:
    sim, receiver = hooked
    repo = sim.repositories()[7]
    hooks_url = f"{sim.api_url}/repositories/{sim.workspace}/{repo['slug']}/hooks"
    created = requests.post(
        hooks_url,
        json={"url": receiver.url + "?repo-hook", "events": ["repo:push"], "active": True},
        timeout=10,
    )
    assert created.status_code == 201
    hook = created.json()
    assert hook["secret_set"] is False and hook["events"] == ["repo:push"]
    listed = requests.get(hooks_url, timeout=10).json()["values"]
    assert [h["uuid"] for h in listed] == [hook["uuid"]]
    sim.admin("POST", f"repos/{repo['slug']}/push", json={"files": {"b.txt": "b"}})
    requests_seen = receiver.wait_for(2)
    by_path = {r.path: r for r in requests_seen}
    mine = by_path["/hook?repo-hook"]
    assert "{" + mine.headers["X-Hook-UUID"] + "}" == hook["uuid"]
    assert "X-Hub-Signature" not in mine.headers
    assert "X-Hub-Signature" in by_path["/hook"].headers
