"""`POST /webhooks/bitbucket-dc`: Data Center deliveries through the Flask ingress (signature
with rotation, headers, narrow body schemas naming the field, the outbox, deduplication, the
ping) and processing them with the Data Center event processor on a real database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from app.bitbucket.datacenter_webhooks import (
    DC_HANDLED_EVENTS,
    event_repository,
    load_dc_event,
)
from app.models import WebhookDelivery
from app.runtime import Runtime
from app.sync.datacenter import stable_uuid
from app.web import create_app
from tests.conftest import migrate
from tests.webhook_support import SECRET, sign

DC_URL = "https://bitbucket.example.com"
HOST = "bitbucket.example.com"
RuntimeFactory = Callable[..., Runtime]


def dc_repository(slug: str = "billing", repo_id: int = 42, key: str = "PLAT") -> dict[str, Any]:
    return {
        "slug": slug,
        "id": repo_id,
        "name": slug.title(),
        "project": {"key": key, "id": 7, "name": "Platform"},
        "public": False,
        "links": {"self": [{"href": f"{DC_URL}/projects/{key}/repos/{slug}/browse"}]},
    }


def refs_changed(slug: str = "billing", to_hash: str = "a" * 40) -> dict[str, Any]:
    return {
        "eventKey": "repo:refs_changed",
        "date": "2026-12-07T23:00:00+0000",
        "actor": {"name": "alice", "id": 1},
        "repository": dc_repository(slug),
        "changes": [
            {
                "ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
                "refId": "refs/heads/main",
                "fromHash": "b" * 40,
                "toHash": to_hash,
                "type": "UPDATE",
            }
        ],
    }


def dc_headers(
    event_key: str, raw: bytes, *, secret: str | None = SECRET, request_id: str | None = None
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json; charset=UTF-8",
        "X-Event-Key": event_key,
        "X-Request-Id": request_id or str(uuid.uuid4()),
    }
    if secret is not None:
        headers["X-Hub-Signature"] = sign(raw, secret)
    return headers


@pytest.fixture
def dc_runtime(runtime_for: RuntimeFactory) -> Runtime:
    rt = runtime_for(
        BITBUCKET_DC_URL=DC_URL,
        BITBUCKET_DC_TOKEN="dc-token",
        BITBUCKET_WEBHOOK_SECRET=f"{SECRET},next-secret",
        # No broker in these tests: deliveries wait as `pending` for the requeue.
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
    )
    migrate(rt.settings.database_url)
    return rt


def post(client: Any, event_key: str, body: Any, **kwargs: Any) -> Any:
    raw = json.dumps(body).encode()
    return client.post(
        "/webhooks/bitbucket-dc", data=raw, headers=dc_headers(event_key, raw, **kwargs)
    )


def stored(rt: Runtime) -> list[WebhookDelivery]:
    with rt.sessions() as session:
        rows = list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        session.expunge_all()
        return rows


def test_a_signed_delivery_is_stored_with_the_data_center_identity(dc_runtime: Runtime) -> None:
    client = create_app(runtime=dc_runtime).test_client()
    answer = post(client, "repo:refs_changed", refs_changed())
    assert answer.status_code == 202, answer.json
    assert answer.json["status"] == "accepted"
    (row,) = stored(dc_runtime)
    assert row.event_key == "repo:refs_changed"
    assert row.repository_full_name == f"{HOST}/PLAT/billing"
    assert row.repository_uuid == stable_uuid(dc_runtime.settings.datacenter, "repo", 42)  # type: ignore[arg-type]
    assert "X-Hub-Signature" not in row.headers and row.headers["X-Request-Id"]


def test_the_second_secret_is_accepted_and_a_wrong_one_is_401(dc_runtime: Runtime) -> None:
    client = create_app(runtime=dc_runtime).test_client()
    rotated = post(client, "repo:refs_changed", refs_changed(), secret="next-secret")
    assert rotated.status_code == 202
    bad = post(client, "repo:refs_changed", refs_changed("other"), secret="wrong")
    assert bad.status_code == 401 and bad.json["error"] == "invalid_signature"
    unsigned = post(client, "repo:refs_changed", refs_changed("third"), secret=None)
    assert unsigned.status_code == 401
    assert len(stored(dc_runtime)) == 1


def test_a_payload_not_of_the_event_shape_is_400_naming_the_field(dc_runtime: Runtime) -> None:
    client = create_app(runtime=dc_runtime).test_client()
    body = refs_changed()
    del body["repository"]["slug"]
    answer = post(client, "repo:refs_changed", body)
    assert answer.status_code == 400
    assert answer.json["error"] == "invalid_body"
    assert "slug" in answer.json["fields"]["repository"]
    pr = {"pullRequest": {"id": "x", "state": "OPEN", "fromRef": {}, "toRef": {}}}
    answer = post(client, "pr:opened", pr)
    assert answer.status_code == 400 and "id" in answer.json["fields"]["pullRequest"]
    no_id = post(client, "repo:refs_changed", refs_changed(), request_id="not-a-uuid")
    assert no_id.status_code == 400 and "X-Request-Id" in no_id.json["fields"]
    assert stored(dc_runtime) == []


def test_a_duplicate_delivery_is_stored_once(dc_runtime: Runtime) -> None:
    client = create_app(runtime=dc_runtime).test_client()
    request_id = str(uuid.uuid4())
    first = post(client, "repo:refs_changed", refs_changed(), request_id=request_id)
    again = post(client, "repo:refs_changed", refs_changed(), request_id=request_id)
    # The same body under a new request id (a replay) is a duplicate too.
    replay = post(client, "repo:refs_changed", refs_changed())
    assert first.status_code == 202
    assert (again.status_code, again.json["status"]) == (200, "duplicate")
    assert (replay.status_code, replay.json["status"]) == (200, "duplicate")
    assert len(stored(dc_runtime)) == 1


def test_a_ping_is_answered_and_stores_nothing(dc_runtime: Runtime) -> None:
    client = create_app(runtime=dc_runtime).test_client()
    answer = post(client, "diagnostics:ping", {"test": True})
    assert (answer.status_code, answer.json["status"]) == (200, "ping")
    assert post(client, "diagnostics:ping", {"test": True}, secret="wrong").status_code == 401
    assert stored(dc_runtime) == []


def test_an_event_bbsync_does_not_handle_is_stored_as_ignored(dc_runtime: Runtime) -> None:
    client = create_app(runtime=dc_runtime).test_client()
    answer = post(client, "pr:comment:added", {"eventKey": "pr:comment:added"})
    assert (answer.status_code, answer.json["status"]) == (202, "ignored")
    assert [r.status for r in stored(dc_runtime)] == ["ignored"]


def test_without_a_data_center_source_the_route_is_404(runtime_for: RuntimeFactory) -> None:
    client = create_app(runtime=runtime_for()).test_client()
    answer = post(client, "repo:refs_changed", refs_changed())
    assert answer.status_code == 404 and answer.json["error"] == "not_configured"


def test_every_handled_event_names_its_repository_or_project() -> None:
    pr = {
        "id": 3,
        "state": "OPEN",
        "fromRef": {"id": "refs/heads/f", "repository": dc_repository()},
        "toRef": {"id": "refs/heads/main", "repository": dc_repository()},
    }
    project = {"key": "PLAT", "id": 7, "name": "Platform"}
    bodies = {
        "repo:refs_changed": refs_changed(),
        "repo:modified": {"old": dc_repository("old"), "new": dc_repository()},
        "repo:forked": {"repository": dc_repository()},
        "project:modified": {"old": {**project, "name": "Old"}, "new": project},
    }
    for key in DC_HANDLED_EVENTS:
        data = load_dc_event(key, bodies.get(key, {"pullRequest": pr}))
        repository = event_repository(key, data)
        if key == "project:modified":
            assert repository is None
        else:
            assert repository is not None and repository["slug"] == "billing", key


def _processed(rt: Runtime, event_key: str, body: dict[str, Any]) -> tuple[str, list[Any]]:
    """Process one delivery with the Data Center processor; what it scheduled."""
    from app.sync.datacenter_events import DataCenterEventProcessor

    scheduled: list[Any] = []
    delivery = WebhookDelivery(event_key=event_key, body=body)
    with rt.sessions.begin() as session:
        processor = DataCenterEventProcessor(
            session,
            rt.settings.datacenter,  # type: ignore[arg-type]
            schedule_refresh=lambda rid: scheduled.append(("refresh", rid)),
            schedule_walk=lambda key: scheduled.append(("walk", key)),
        )
        return processor.process(delivery), scheduled


def _known_repository(rt: Runtime) -> int:
    from app.models import Repository, Workspace

    with rt.sessions.begin() as session:
        ws = Workspace(uuid="{00000000-0000-4000-8000-000000000001}", slug=f"{HOST}/PLAT")
        session.add(ws)
        session.flush()
        repo = Repository(
            uuid=stable_uuid(rt.settings.datacenter, "repo", 42),  # type: ignore[arg-type]
            workspace_id=ws.id,
            slug="billing",
            full_name=f"{HOST}/PLAT/billing",
            default_branch="main",
            head_commit="b" * 40,
        )
        session.add(repo)
        session.flush()
        return repo.id


def test_processing_refs_changed_moves_the_head_once_and_never_back(dc_runtime: Runtime) -> None:
    from app.models import Repository

    repo_id = _known_repository(dc_runtime)
    summary, scheduled = _processed(dc_runtime, "repo:refs_changed", refs_changed())
    assert scheduled == [("refresh", repo_id)], summary
    late = {**refs_changed(to_hash="c" * 40), "date": "2026-12-07T22:00:00+0000"}
    _, scheduled = _processed(dc_runtime, "repo:refs_changed", late)
    assert scheduled == [("refresh", repo_id)]
    tag = refs_changed()
    tag["changes"][0]["refId"] = "refs/tags/v1"
    summary, scheduled = _processed(dc_runtime, "repo:refs_changed", tag)
    assert scheduled == [] and "nothing to do" in summary
    with dc_runtime.sessions() as session:
        repo = session.get(Repository, repo_id)
        assert repo is not None and repo.head_commit == "a" * 40  # the late one did not win


def test_an_unknown_repository_schedules_a_walk_of_its_project_only_if_synced(
    runtime_for: RuntimeFactory,
) -> None:
    rt = runtime_for(
        BITBUCKET_DC_URL=DC_URL, BITBUCKET_DC_TOKEN="dc-token", BITBUCKET_DC_PROJECTS="PLAT"
    )
    migrate(rt.settings.database_url)
    summary, scheduled = _processed(rt, "repo:refs_changed", refs_changed())
    assert scheduled == [("walk", "PLAT")], summary
    other = refs_changed()
    other["repository"]["project"]["key"] = "OTHER"
    summary, scheduled = _processed(rt, "repo:refs_changed", other)
    assert scheduled == [] and "outside BITBUCKET_DC_PROJECTS" in summary
