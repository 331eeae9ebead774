"""The webhook ingress through the real Flask app and a real database: signatures, validation,
deduplication, the outbox written before the answer, and what happens when the broker or the
database is down."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.config import SettingsError
from app.models import WebhookDelivery
from app.runtime import Runtime
from app.web import create_app
from tests.conftest import migrate
from tests.webhook_support import (
    delivery_headers,
    encode,
    pullrequest_body,
    repository,
)

RuntimeFactory = Callable[..., Runtime]
URL = "/webhooks/bitbucket"


@pytest.fixture
def rt(runtime_for: RuntimeFactory, sqlite_url: str) -> Runtime:
    migrate(sqlite_url)
    return runtime_for()


def deliveries(rt: Runtime) -> list[WebhookDelivery]:
    with rt.sessions() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def post(rt: Runtime, event: str, body: Any, **options: Any) -> Any:
    raw = body if isinstance(body, bytes) else encode(body)
    headers = options.pop("headers", None) or delivery_headers(event, raw, **options)
    return create_app(runtime=rt).test_client().post(URL, data=raw, headers=headers)


PUSH = {
    "push": {
        "changes": [
            {
                "new": {"type": "branch", "name": "main", "target": {"hash": "a" * 40}},
                "old": None,
                "created": True,
                "closed": False,
            }
        ]
    },
    "repository": repository(),
}


def test_a_signed_delivery_is_stored_before_the_answer_and_queued(rt: Runtime) -> None:
    response = post(rt, "repo:push", PUSH)
    assert response.status_code == 202
    assert response.json["status"] == "accepted" and response.json["queued"] is True
    (stored,) = deliveries(rt)
    assert stored.id == response.json["delivery"]
    assert stored.status == "queued"
    assert stored.event_key == "repo:push"
    assert stored.repository_full_name == "acme/billing"
    assert stored.body == PUSH
    assert "X-Hub-Signature" not in stored.headers


@pytest.mark.parametrize(
    ("signature", "why"),
    [(None, "missing"), ("sha256=" + "0" * 64, "wrong"), ("md5=abc", "wrong scheme")],
)
def test_a_bad_signature_is_refused_and_nothing_stored(
    rt: Runtime, signature: str | None, why: str
) -> None:
    raw = encode(PUSH)
    headers = delivery_headers("repo:push", raw)
    headers.pop("X-Hub-Signature")
    if signature:
        headers["X-Hub-Signature"] = signature
    response = post(rt, "repo:push", raw, headers=headers)
    assert response.status_code == 401, why
    assert response.json["error"] == "invalid_signature"
    assert deliveries(rt) == []


def test_rotated_secrets_are_all_accepted(runtime_for: RuntimeFactory, sqlite_url: str) -> None:
    migrate(sqlite_url)
    rt = runtime_for(BITBUCKET_WEBHOOK_SECRET="old-secret,new-secret")
    # Distinct bodies: the same body twice is a duplicate whatever its signature.
    assert post(rt, "repo:push", {**PUSH, "n": 1}, secret="old-secret").status_code == 202
    assert post(rt, "repo:push", {**PUSH, "n": 2}, secret="new-secret").status_code == 202
    assert post(rt, "repo:push", {**PUSH, "n": 3}, secret="test-secret").status_code == 401


def test_a_retried_delivery_is_stored_once(rt: Runtime) -> None:
    raw = encode(PUSH)
    headers = delivery_headers("repo:push", raw)
    first = post(rt, "repo:push", raw, headers=headers)
    again = post(rt, "repo:push", raw, headers={**headers, "X-Attempt-Number": "2"})
    assert first.status_code == 202
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert len(deliveries(rt)) == 1


def test_an_event_bbsync_does_not_handle_is_acknowledged_and_recorded(rt: Runtime) -> None:
    response = post(rt, "issue:created", {"issue": {"id": 1}, "repository": repository()})
    assert response.status_code == 202
    assert response.json["status"] == "ignored"
    (stored,) = deliveries(rt)
    assert stored.status == "ignored"


@pytest.mark.parametrize(
    ("event", "body", "error", "field"),
    [
        ("repo:push", b"{not json", "invalid_json", None),
        ("repo:push", encode([1, 2]), "invalid_body", "_schema"),
        ("repo:push", encode({"repository": repository()}), "invalid_body", "push"),
        ("repo:push", encode({"push": {"changes": []}}), "invalid_body", "repository"),
        (
            "pullrequest:created",
            encode(
                {
                    **pullrequest_body(1, "OPEN", "2026-11-01T10:00:00+00:00"),
                    "pullrequest": {"id": "one"},
                }
            ),
            "invalid_body",
            "pullrequest",
        ),
        (
            "repo:commit_status_created",
            encode(
                {
                    "commit_status": {"key": "ci", "state": "GREEN", "commit": {"hash": "a" * 40}},
                    "repository": repository(),
                }
            ),
            "invalid_body",
            "commit_status",
        ),
        (
            "repo:push",
            encode({**PUSH, "repository": repository(api_url="https://evil.example.com/2.0")}),
            "invalid_body",
            "repository",
        ),
    ],
)
def test_bad_bodies_get_a_json_error_naming_the_field_and_leave_nothing(
    rt: Runtime, event: str, body: bytes, error: str, field: str | None
) -> None:
    response = post(rt, event, body)
    assert response.status_code == 400
    assert response.json["error"] == error
    if field:
        assert field in response.json["fields"]
    assert deliveries(rt) == []


def test_a_deeply_nested_body_is_refused_not_a_crash(rt: Runtime) -> None:
    response = post(rt, "repo:push", b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400
    assert response.json["error"] == "invalid_json"


def test_missing_headers_are_named(rt: Runtime) -> None:
    raw = encode(PUSH)
    headers = delivery_headers("repo:push", raw)
    del headers["X-Request-UUID"]
    headers["X-Event-Key"] = "not an event"
    response = post(rt, "repo:push", raw, headers=headers)
    assert response.status_code == 400
    assert set(response.json["fields"]) == {"X-Request-UUID", "X-Event-Key"}


def test_an_oversized_body_is_refused(rt: Runtime) -> None:
    body = {**PUSH, "padding": "x" * (600 * 1024)}
    response = post(rt, "repo:push", body)
    assert response.status_code == 413
    assert response.json["error"] in ("payload_too_large", "request_entity_too_large")
    assert deliveries(rt) == []


def test_with_the_broker_down_the_delivery_is_kept_for_the_requeue(
    runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    rt = runtime_for(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    response = post(rt, "repo:push", PUSH)
    assert response.status_code == 202
    assert response.json["queued"] is False
    (stored,) = deliveries(rt)
    assert stored.status == "pending"


def test_with_the_database_and_redis_down_bitbucket_is_told_to_retry(
    runtime_for: RuntimeFactory,
) -> None:
    rt = runtime_for(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/none", REDIS_URL="redis://127.0.0.1:1/0"
    )
    response = post(rt, "repo:push", PUSH)
    assert response.status_code == 503
    assert response.json["error"] == "database_unavailable"


def test_the_web_process_refuses_to_start_without_a_secret(
    runtime_for: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SettingsError, match="BITBUCKET_WEBHOOK_SECRET"):
        create_app(runtime=runtime_for(BITBUCKET_WEBHOOK_SECRET=""))
    with caplog.at_level(logging.WARNING):
        create_app(
            runtime=runtime_for(BITBUCKET_WEBHOOK_SECRET="", BBSYNC_ALLOW_UNSIGNED_WEBHOOKS="true")
        )
    assert "unsigned" in caplog.text


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    # What JSON may carry and PostgreSQL's JSONB may not: NUL and unpaired surrogates.
    | st.lists(st.sampled_from(["\x00", "\ud800", "\udfff", "a", "é", "\U0001f600"])).map("".join),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
# Numbers Python's json accepts but nothing can store or even convert: each must be a 400.
hostile_numbers = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "-" + "1" * 200]
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
# Any character but line breaks (which no HTTP client can send), short or huge.
any_header = st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=40) | st.text(
    alphabet=st.characters(blacklist_characters="\r\n"), min_size=1, max_size=3
).map(lambda t: t * 3000)


def hostile_body(event: str) -> st.SearchStrategy[bytes]:
    """A body as raw bytes: JSON with hostile text, or a hostile number in a valid delivery."""
    encoded = st.one_of(
        json_values, st.fixed_dictionaries({"repository": json_values, "push": json_values})
    ).map(encode)
    valid = encode(PUSH if event == "repo:push" else {"repository": repository()})
    spliced = hostile_numbers.map(lambda n: valid[:-1] + b', "extra": ' + n.encode() + b"}")
    return encoded | spliced


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    event=st.sampled_from(
        [
            "repo:push",
            "pullrequest:created",
            "repo:commit_status_updated",
            "repo:updated",
            "repo:deleted",
            "issue:created",
        ]
    ),
    # Mostly one hostile header at a time, so that most deliveries get as far as the body.
    hostile=st.sampled_from(
        [
            None,
            None,
            "X-Event-Key",
            "X-Request-UUID",
            "X-Attempt-Number",
            "X-Hub-Signature",
            "X-Hook-UUID",
            "User-Agent",
            "Content-Type",
        ]
    ),
    repeated=st.lists(
        st.sampled_from(["X-Event-Key", "X-Request-UUID", "X-Hub-Signature", "X-Hook-UUID"]),
        max_size=2,
    )
    | st.just([]),
    signed=st.booleans() | st.just(True),
)
def test_random_deliveries_never_get_a_5xx(
    fuzz_rt: Runtime,
    data: st.DataObject,
    event: str,
    hostile: str | None,
    repeated: list[str],
    signed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = data.draw(hostile_body(event))
    headers = delivery_headers(event, raw, secret="test-secret" if signed else "nope")
    if hostile:
        headers[hostile] = data.draw(any_header | header_text)
    sent = list(headers.items())
    # A header sent twice (as a replaying or broken client may): one more copy of each named.
    sent += [(name, value) for name, value in sent if name in repeated]
    with caplog.at_level(logging.ERROR):
        response = create_app(runtime=fuzz_rt).test_client().post(URL, data=raw, headers=sent)
    assert response.status_code in (200, 202, 400, 401, 413)
    assert response.is_json
    assert not [r for r in caplog.records if r.exc_info]


@pytest.fixture
def fuzz_rt(runtime_for: RuntimeFactory, migrated_url: str, redis_url: str) -> Runtime:
    """Both databases: what SQLite stores, PostgreSQL's JSONB may refuse."""
    return runtime_for(DATABASE_URL=migrated_url)
