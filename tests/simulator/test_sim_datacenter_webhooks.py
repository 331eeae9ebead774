"""Data Center webhooks: signed deliveries with DC headers and payloads, and hook CRUD."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator

import pytest
import requests

from bitbucket_sim.testing import SimProcess

from .receiver import ReceivedRequest, WebhookReceiver, running_receiver

pytestmark = pytest.mark.slow

SECRET = "dc-webhook-secret"
DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}$")
ZERO = "0" * 40


@pytest.fixture(scope="module")
def hooked() -> Iterator[tuple[SimProcess, WebhookReceiver]]:
    with (
        running_receiver() as receiver,
        SimProcess(
            flavor="datacenter",
            repos=30,  # two projects
            seed=31,
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            webhook_retry_delay=0.1,
        ) as sim,
    ):
        yield sim, receiver


@pytest.fixture(autouse=True)
def clean(hooked: tuple[SimProcess, WebhookReceiver]) -> None:
    sim, receiver = hooked
    with receiver.arrived:
        receiver.requests.clear()
    sim.admin("DELETE", "deliveries")


def body_of(request: ReceivedRequest) -> dict:
    return json.loads(request.body)


def keys_of(requests_: list[ReceivedRequest]) -> list[str]:
    return [r.headers["X-Event-Key"] for r in requests_]


def assert_envelope(payload: dict, event_key: str) -> None:
    assert payload["eventKey"] == event_key
    assert DATE.match(payload["date"]), payload["date"]
    actor = payload["actor"]
    assert {"name", "emailAddress", "id", "displayName", "slug", "type"} <= set(actor)


def test_push_delivers_a_signed_refs_changed(hooked) -> None:
    sim, receiver = hooked
    summary = sim.repositories()[0]
    answer = sim.admin(
        "POST", f"repos/{summary['slug']}/push", json={"files": {"catalog-info.yaml": "x: 1\n"}}
    )
    head = answer.json()["hash"]
    (request,) = receiver.wait_for(1)
    headers = request.headers
    assert headers["X-Event-Key"] == "repo:refs_changed"
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["X-Request-Id"])
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Hub-Signature"], expected)
    assert "X-Request-UUID" not in headers and "X-Hook-UUID" not in headers
    payload = body_of(request)
    assert_envelope(payload, "repo:refs_changed")
    repository = payload["repository"]
    assert repository["slug"] == summary["slug"]
    assert repository["project"]["key"] == summary["project_key"]
    branch = summary["mainbranch"]
    assert payload["changes"] == [
        {
            "ref": {"id": f"refs/heads/{branch}", "displayId": branch, "type": "BRANCH"},
            "refId": f"refs/heads/{branch}",
            "fromHash": summary["head"],
            "toHash": head,
            "type": "UPDATE",
        }
    ]


def test_branch_and_tag_creation_and_deletion(hooked) -> None:
    sim, receiver = hooked
    slug = sim.repositories()[1]["slug"]
    sim.admin("POST", f"repos/{slug}/branches", json={"name": "dc/new"})
    sim.admin("POST", f"repos/{slug}/tags", json={"name": "v9"})
    sim.admin("DELETE", f"repos/{slug}/branches/dc/new")
    changes = [body_of(r)["changes"][0] for r in receiver.wait_for(3)]
    assert [(c["ref"]["type"], c["type"]) for c in changes] == [
        ("BRANCH", "ADD"),
        ("TAG", "ADD"),
        ("BRANCH", "DELETE"),
    ]
    assert changes[0]["fromHash"] == ZERO and changes[2]["toHash"] == ZERO
    assert changes[1]["refId"] == "refs/tags/v9"


def test_pull_request_lifecycle_events(hooked) -> None:
    sim, receiver = hooked
    slug = sim.repositories()[2]["slug"]
    users = [u["name"] for u in requests.get(f"{sim.rest_url}/users", timeout=10).json()["values"]]
    sim.admin("POST", f"repos/{slug}/branches", json={"name": "feature/hooks"})
    pr = sim.admin(
        "POST",
        f"repos/{slug}/pullrequests",
        json={"source": "feature/hooks", "reviewers": [users[1]]},
    ).json()
    base = f"repos/{slug}/pullrequests/{pr['id']}"
    old_head = sim.repositories()[2]["branches"]["feature/hooks"]
    sim.admin("POST", f"repos/{slug}/push", json={"branch": "feature/hooks", "files": {"a": "1"}})
    sim.admin("POST", f"{base}/update", json={"title": "Renamed"})
    sim.admin("POST", f"{base}/approve", json={"actor": users[1]})
    sim.admin("POST", f"{base}/needs_work", json={"actor": users[1]})
    sim.admin("POST", f"{base}/merge")
    expected = [
        "repo:refs_changed",  # the branch
        "pr:opened",
        "repo:refs_changed",  # the push ...
        "pr:from_ref_updated",  # ... moves the PR's source
        "pr:modified",
        "pr:reviewer:approved",
        "pr:reviewer:needs_work",
        "repo:refs_changed",  # the merge commit
        "pr:merged",
    ]
    received = receiver.wait_for(len(expected))
    assert keys_of(received) == expected
    payloads = [body_of(r) for r in received]
    for key, payload in zip(expected, payloads, strict=True):
        assert_envelope(payload, key)
    opened = payloads[1]["pullRequest"]
    assert opened["fromRef"]["id"] == "refs/heads/feature/hooks" and opened["state"] == "OPEN"
    assert payloads[3]["previousFromHash"] == old_head
    assert payloads[4]["previousTitle"] != payloads[4]["pullRequest"]["title"] == "Renamed"
    approved = payloads[5]
    assert approved["participant"]["status"] == "APPROVED"
    assert approved["previousStatus"] == "UNAPPROVED"
    assert payloads[6]["participant"]["status"] == "NEEDS_WORK"
    assert payloads[6]["previousStatus"] == "APPROVED"
    assert payloads[8]["pullRequest"]["state"] == "MERGED"


def test_decline_delete_rename_project_and_ping(hooked) -> None:
    sim, receiver = hooked
    summary = sim.repositories()[3]
    slug = summary["slug"]
    sim.admin("POST", f"repos/{slug}/branches", json={"name": "feature/gone"})
    first = sim.admin("POST", f"repos/{slug}/pullrequests", json={"source": "feature/gone"}).json()
    second = sim.admin("POST", f"repos/{slug}/pullrequests", json={"source": "feature/gone"}).json()
    sim.admin("POST", f"repos/{slug}/pullrequests/{first['id']}/decline")
    sim.admin("DELETE", f"repos/{slug}/pullrequests/{second['id']}")
    sim.admin("POST", f"repos/{slug}/rename", json={"name": "Renamed", "slug": "renamed-dc"})
    sim.admin("PATCH", f"projects/{summary['project_key']}", json={"name": "New project name"})
    sim.admin("POST", "hooks/webhook-url/ping")
    expected = [
        "repo:refs_changed",
        "pr:opened",
        "pr:opened",
        "pr:declined",
        "pr:deleted",
        "repo:modified",
        "project:modified",
        "diagnostics:ping",
    ]
    received = receiver.wait_for(len(expected))
    assert keys_of(received) == expected
    modified = body_of(received[5])
    assert (modified["old"]["slug"], modified["new"]["slug"]) == (slug, "renamed-dc")
    assert modified["new"]["name"] == "Renamed"
    project = body_of(received[6])
    assert project["new"]["name"] == "New project name" != project["old"]["name"]
    ping = received[7]
    assert body_of(ping) == {"test": True}
    expected_signature = hmac.new(SECRET.encode(), ping.body, hashlib.sha256).hexdigest()
    assert ping.headers["X-Hub-Signature"] == "sha256=" + expected_signature


def test_repository_and_project_webhooks_crud_and_scope(hooked) -> None:
    sim, receiver = hooked
    summaries = sim.repositories()
    first = summaries[4]
    other = next(s for s in summaries if s["project_key"] != first["project_key"])
    with running_receiver() as scoped:
        project_hooks = f"{sim.rest_url}/projects/{first['project_key']}/webhooks"
        created = requests.post(
            project_hooks,
            json={
                "name": "bbsync",
                "url": scoped.url,
                "events": ["repo:refs_changed"],
                "configuration": {"secret": "s3"},
            },
            timeout=10,
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["scopeType"] == "project" and "secret" not in json.dumps(hook)
        listed = requests.get(project_hooks, timeout=10).json()
        assert [h["id"] for h in listed["values"]] == [hook["id"]]
        sim.admin("POST", f"repos/{first['slug']}/push", json={"files": {"z": "1"}})
        sim.admin("POST", f"repos/{other['slug']}/push", json={"files": {"z": "1"}})
        # One worker delivers in order: once the catch-all hook has the second push, the
        # project hook has had every chance to get (or not get) both.
        receiver.wait_for(2)
        (request,) = scoped.requests
        signature = hmac.new(b"s3", request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Hub-Signature"] == f"sha256={signature}"
        assert body_of(request)["repository"]["slug"] == first["slug"]
        one = f"{project_hooks}/{hook['id']}"
        changed = requests.put(one, json={"active": False}, timeout=10).json()
        assert changed["active"] is False
        assert requests.delete(one, timeout=10).status_code == 204
        assert requests.get(one, timeout=10).status_code == 404
    repo_hooks = f"{sim.rest_url}/projects/{first['project_key']}/repos/{first['slug']}/webhooks"
    bad = requests.post(
        repo_hooks, json={"name": "x", "url": "ftp://x", "events": ["a"]}, timeout=10
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["context"] == "url"
    sim.set_config(project_webhooks=False)
    try:
        assert requests.get(project_hooks, timeout=10).status_code == 404
        assert requests.get(repo_hooks, timeout=10).status_code == 200
    finally:
        sim.set_config(project_webhooks=True)
