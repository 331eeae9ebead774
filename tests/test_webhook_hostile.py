"""Hostile headers and bodies at the ingress, on SQLite and PostgreSQL: each is a 4xx naming
the problem, or is stored safely; never a 5xx. Replays and links on other hosts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from app.models import Repository, WebhookDelivery
from app.runtime import Runtime
from app.sync.events import EventProcessor
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import migrate
from tests.webhook_support import delivery_headers, encode, pullrequest_body, repository

RuntimeFactory = Callable[..., Runtime]
URL = "/webhooks/bitbucket"
PUSH = {
    "push": {
        "changes": [
            {"new": {"type": "branch", "name": "main", "target": {"hash": "a" * 40}}, "old": None}
        ]
    },
    "repository": repository(),
}


@pytest.fixture
def rt(runtime_for: RuntimeFactory, migrated_url: str) -> Runtime:
    return runtime_for(DATABASE_URL=migrated_url)


def send(rt: Runtime, raw: bytes, headers: Any) -> Any:
    return create_app(runtime=rt).test_client().post(URL, data=raw, headers=headers)


def stored(rt: Runtime) -> list[WebhookDelivery]:
    with rt.sessions() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_a_non_ascii_signature_is_a_401_naming_the_header(rt: Runtime) -> None:
    raw = encode(PUSH)
    headers = {**delivery_headers("repo:push", raw), "X-Hub-Signature": "sha256=é" + "0" * 63}
    response = send(rt, raw, headers)
    assert response.status_code == 401
    assert response.json["error"] == "invalid_signature"
    assert "X-Hub-Signature" in response.json["message"]
    assert stored(rt) == []


@pytest.mark.parametrize(
    ("header", "value", "repeat"),
    [
        ("X-Event-Key", "repo:" + "x" * 60, False),  # matches the pattern, wider than the column
        ("X-Event-Key", "repo:push" * 2000, False),
        ("X-Event-Key", "repo:püsh", False),
        ("X-Event-Key", None, True),
        ("X-Request-UUID", "not-a-uuid", False),
        ("X-Request-UUID", None, True),
        ("X-Hook-UUID", "{" + "f" * 36 + "}", False),
        ("X-Attempt-Number", "9" * 5000, False),
        ("User-Agent", "Bitbucket-Webhooks/2.0 " + "x" * 8000, False),
    ],
)
def test_a_malformed_header_is_a_400_naming_it(
    rt: Runtime, header: str, value: str | None, repeat: bool
) -> None:
    raw = encode(PUSH)
    headers = delivery_headers("repo:push", raw)
    if value is not None:
        headers[header] = value
    sent = list(headers.items()) + ([(header, headers[header])] if repeat else [])
    response = send(rt, raw, sent)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_headers"
    assert list(response.json["fields"]) == [header]
    assert stored(rt) == []


def test_a_repeated_signature_is_refused(rt: Runtime) -> None:
    raw = encode(PUSH)
    headers = delivery_headers("repo:push", raw)
    response = send(rt, raw, [*headers.items(), ("X-Hub-Signature", headers["X-Hub-Signature"])])
    assert response.status_code == 401
    assert response.json["error"] == "invalid_signature"


def test_text_jsonb_cannot_hold_is_stored_replaced_and_flagged(rt: Runtime) -> None:
    body = pullrequest_body(3, "OPEN", "2026-11-01T10:00:00+00:00", title="nul\u0000 and \ud800")
    body["pullrequest"]["links"] = {"\udfffkey": {"href": "x"}}
    raw = json.dumps(body).encode()  # ASCII escapes, as Bitbucket's JSON would carry them
    assert b"\\u0000" in raw and b"\\ud800" in raw
    response = send(rt, raw, delivery_headers("pullrequest:created", raw))
    assert response.status_code == 202, response.json
    (delivery,) = stored(rt)
    assert delivery.body_sanitized is True
    assert delivery.body["pullrequest"]["title"] == "nul\ufffd and \ufffd"
    assert list(delivery.body["pullrequest"]["links"]) == ["\ufffdkey"]
    clean = send(rt, encode(PUSH), delivery_headers("repo:push", encode(PUSH)))
    assert clean.status_code == 202
    assert stored(rt)[1].body_sanitized is False


@pytest.mark.parametrize(
    ("number", "named"),
    [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e999", "out of range"),
        ("9" * 5000, "more than 100 digits"),
    ],
)
def test_numbers_nothing_can_store_are_a_400_naming_them(
    rt: Runtime, number: str, named: str
) -> None:
    raw = encode(PUSH)[:-1] + b', "size": ' + number.encode() + b"}"
    response = send(rt, raw, delivery_headers("repo:push", raw))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_json"
    assert named in response.json["message"]
    assert stored(rt) == []


def test_a_body_nested_past_the_bound_is_a_400(rt: Runtime) -> None:
    raw = encode({**PUSH, "deep": json.loads("[" * 200 + "]" * 200)})
    response = send(rt, raw, delivery_headers("repo:push", raw))
    assert response.status_code == 400
    assert "nested" in response.json["message"]


def test_a_full_name_wider_than_its_column_is_a_400(rt: Runtime) -> None:
    body = {**PUSH, "repository": {**repository(), "full_name": "acme/" + "r" * 600}}
    raw = encode(body)
    response = send(rt, raw, delivery_headers("repo:push", raw))
    assert response.status_code == 400
    assert "full_name" in response.json["fields"]["repository"]


def test_a_replayed_body_under_a_new_request_uuid_is_a_duplicate(rt: Runtime) -> None:
    raw = encode(PUSH)
    first = send(rt, raw, delivery_headers("repo:push", raw))
    replay = send(rt, raw, delivery_headers("repo:push", raw, request_uuid=str(uuid.uuid4())))
    assert first.status_code == 202
    assert replay.status_code == 200 and replay.json["status"] == "duplicate"
    (delivery,) = stored(rt)
    assert len(delivery.body_sha256 or "") == 64


def test_one_body_under_two_event_keys_is_two_deliveries(rt: Runtime) -> None:
    """`repo:created` and `repo:deleted` of one repository can carry the very same body."""
    raw = encode({"repository": repository(), "actor": {"type": "user", "uuid": "{a}"}})
    created = send(rt, raw, delivery_headers("repo:created", raw))
    deleted = send(rt, raw, delivery_headers("repo:deleted", raw, request_uuid=str(uuid.uuid4())))
    assert (created.status_code, deleted.status_code) == (202, 202)
    assert sorted(d.event_key for d in stored(rt)) == ["repo:created", "repo:deleted"]


@pytest.mark.parametrize(
    ("href", "accepted"),
    [
        ("https://api.bitbucket.org/2.0/repositories/acme/billing", True),
        ("https://bitbucket.org/acme/billing", True),
        ("https://bb-gateway.internal/2.0/repositories/acme/billing", True),
        ("https://evil.example.com/2.0/repositories/acme/billing", False),
        ("https://api.bitbucket.org@evil.example.com/2.0/repositories", False),
        ("https://api.bitbucket.org.evil.example.com/2.0/repositories", False),
        ("http://api.bitbucket.org/2.0/repositories/acme/billing", False),
        ("https://[not-a-host/2.0", False),
    ],
)
def test_links_on_bitbucket_or_the_configured_host_are_accepted_behind_a_gateway(
    runtime_for: RuntimeFactory, sqlite_url: str, href: str, accepted: bool
) -> None:
    migrate(sqlite_url)
    rt = runtime_for(BITBUCKET_API_URL="https://bb-gateway.internal/2.0")
    repo = {**repository(), "links": {"self": {"href": href}}}
    raw = encode({**PUSH, "repository": repo})
    response = send(rt, raw, delivery_headers("repo:push", raw))
    assert response.status_code == (202 if accepted else 400), response.json
    if not accepted:
        assert "links" in response.json["fields"]["repository"]


def test_payload_links_are_never_followed(
    sim: SimProcess, runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    """A repository bbsync has not seen is read from the configured API by its identity,
    whatever host its links name."""
    migrate(sqlite_url)
    rt = runtime_for(sim)
    target = sim.repositories()[0]
    payload_repo = repository(target["slug"], target["uuid"], "https://api.bitbucket.org/2.0")
    body = {**PUSH, "repository": payload_repo}
    sim.reset_stats()
    with rt.sessions() as session:
        processor = EventProcessor(rt.bitbucket(), session, rt.settings, lambda _: None)
        delivery = WebhookDelivery(request_uuid=str(uuid.uuid4()), event_key="repo:push", body=body)
        processor.process(delivery)
        session.commit()
        assert session.scalars(select(Repository.uuid)).all() == [target["uuid"]]
    assert sim.stats()["calls"]["repositories"] >= 1


def test_bodies_are_stored_as_they_came_or_re_serialised_when_they_must_be(rt: Runtime) -> None:
    """The stored text is the body itself on the common path; numbers PostgreSQL would read
    differently from Python, or refuse, are stored as Python read them."""
    bodies = [
        # Raw UTF-8 (not escaped), an escaped surrogate pair, ordinary numbers.
        {**PUSH, "note": "café ☕ 😀", "size": 12, "ratio": 0.25},
        {**PUSH, "note": "\U0001f600 escaped"},
    ]
    raws = [json.dumps(bodies[0], ensure_ascii=False).encode(), json.dumps(bodies[1]).encode()]
    assert b"\\ud83d" in raws[1]
    odd = {**PUSH, "tiny": 1e-300, "huge": 2.5e20}
    raws.append(encode(PUSH)[:-1] + b', "tiny": 1e-999, "long": 0.' + b"1" * 60 + b"}")
    bodies.append({**PUSH, "tiny": 0.0, "long": float("0." + "1" * 60)})
    raws.append(encode(odd))
    bodies.append(odd)
    for raw in raws:
        response = send(rt, raw, delivery_headers("repo:push", raw))
        assert response.status_code == 202, response.json
    assert [d.body for d in stored(rt)] == bodies
    assert not any(d.body_sanitized for d in stored(rt))


def test_a_connection_the_database_dropped_is_replaced_not_spooled(
    runtime_for: RuntimeFactory, postgres_url: str
) -> None:
    migrate(postgres_url)
    rt = runtime_for(DATABASE_URL=postgres_url)
    app = create_app(runtime=rt)
    first = app.test_client().post(
        URL, data=encode(PUSH), headers=delivery_headers("repo:push", encode(PUSH))
    )
    assert first.status_code == 202 and first.json["status"] == "accepted"
    # The server ends every other session (a restart, a failover): the pooled one is stale.
    with rt.engine.connect() as connection:
        connection.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    raw = encode({**PUSH, "after": True})
    second = app.test_client().post(URL, data=raw, headers=delivery_headers("repo:push", raw))
    assert second.status_code == 202 and second.json["status"] == "accepted", second.json
    assert [d.id for d in stored(rt)] == [first.json["delivery"], second.json["delivery"]]
    rt.engine.dispose()
    rt.statement_engine.dispose()
