"""The Redis spool's drain against real Redis and both databases: order, idempotence, and
entries that cannot be stored set aside without holding up the rest."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import redis
from sqlalchemy import select

from app.models import WebhookDelivery
from app.outbox import SPOOL_DEAD_KEY, SPOOL_KEY, DeliverySpool, IncomingDelivery
from app.runtime import Runtime
from tests.webhook_support import encode, repository


def incoming(n: int, event_key: str = "repo:push") -> IncomingDelivery:
    raw = encode({"push": {"changes": []}, "repository": repository(), "n": n})
    return IncomingDelivery(
        request_uuid=str(uuid.uuid4()),
        hook_uuid=None,
        event_key=event_key,
        attempt=1,
        headers={"X-Event-Key": event_key},
        raw=raw,
        handled=event_key == "repo:push",
        repository_uuid=repository()["uuid"],
        repository_full_name="acme/billing",
    )


@pytest.fixture
def rt(runtime_for: Callable[..., Runtime], migrated_url: str) -> Runtime:
    return runtime_for(DATABASE_URL=migrated_url)


def outbox(rt: Runtime) -> list[WebhookDelivery]:
    with rt.sessions() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def test_a_drain_stores_in_order_once_and_sends_the_handled(
    rt: Runtime, redis_client: redis.Redis
) -> None:
    spool = DeliverySpool(rt.redis, 100)
    spooled = [incoming(n, "repo:push" if n % 2 else "issue:created") for n in range(7)]
    for delivery in spooled:
        assert spool.add(delivery)
    assert spool.add(spooled[3])  # Bitbucket's retry of one, spooled twice
    sent: list[int] = []
    result = spool.drain(rt.sessions, lambda delivery_id: sent.append(delivery_id) or True)
    assert (result.stored, result.duplicates, result.left) == (7, 1, 0)
    stored = outbox(rt)
    assert [d.request_uuid for d in stored] == [d.request_uuid for d in spooled]
    assert [d.received_at for d in stored] == [d.received_at for d in spooled]
    assert sent == [d.id for d in stored if d.event_key == "repo:push"]
    assert {d.status for d in stored} == {"queued", "ignored"}
    # Drained again (as after a crash between the commit and the trim): nothing new.
    spool.add(spooled[0])
    assert spool.drain(rt.sessions, lambda _: True).stored == 0
    assert len(outbox(rt)) == 7
    assert redis_client.xlen(SPOOL_KEY) == 0


def test_a_drain_with_the_broker_down_leaves_them_pending(
    rt: Runtime, redis_client: redis.Redis
) -> None:
    spool = DeliverySpool(rt.redis, 100)
    for n in range(3):
        spool.add(incoming(2 * n + 1))
    spool.drain(rt.sessions, lambda _: False)
    assert [d.status for d in outbox(rt)] == ["pending"] * 3


def test_an_unusable_entry_is_set_aside_without_holding_up_the_rest(
    runtime_for: Callable[..., Runtime], migrated_postgres_url: str, redis_client: redis.Redis
) -> None:
    rt = runtime_for(DATABASE_URL=migrated_postgres_url)
    spool = DeliverySpool(rt.redis, 100)
    spool.add(incoming(1))
    redis_client.xadd(SPOOL_KEY, {"meta": b"not json", "body": b"{}"})
    spool.add(incoming(3, "repo:" + "x" * 80))  # wider than the column: PostgreSQL refuses it
    spool.add(incoming(5))
    result = spool.drain(rt.sessions, lambda _: True)
    assert (result.stored, result.dead, result.left) == (2, 2, 0)
    assert [d.body["n"] for d in outbox(rt)] == [1, 5]
    assert redis_client.xlen(SPOOL_DEAD_KEY) == 2


def test_a_full_or_disabled_spool_takes_nothing(rt: Runtime) -> None:
    assert not DeliverySpool(rt.redis, 0).add(incoming(1))
    full = DeliverySpool(rt.redis, 2)
    assert full.add(incoming(1)) and full.add(incoming(3))
    assert not full.add(incoming(5))
    assert not full.can_take()


def test_the_ingress_queues_behind_a_spool_another_process_filled_then_goes_direct(
    rt: Runtime,
) -> None:
    """The spool's depth rides with each delivery's latency record; a reading is trusted for
    at most a second, and a delivery that went through the spool makes the next one read
    afresh, so the ingress leaves the spool as soon as it is drained."""
    from app.web import create_app
    from tests.webhook_support import delivery_headers

    app = create_app(runtime=rt)
    client = app.test_client()

    def post(n: int) -> tuple[str, str]:
        raw = encode({"push": {"changes": []}, "repository": repository(), "n": n})
        headers = delivery_headers("repo:push", raw)
        response = client.post("/webhooks/bitbucket", data=raw, headers=headers)
        assert response.status_code == 202, response.json
        response.close()  # runs what waits for the answer to be sent (the drain)
        return response.json["status"], headers["X-Request-UUID"]

    first = post(1)
    assert first[0] == "accepted"
    # Another process spooled one while its database connection failed.
    other = incoming(2)
    assert DeliverySpool(rt.redis, 100).add(other)
    app.extensions["bbsync.spool_watch"].forget()  # as a reading older than its second
    behind = post(3)
    assert behind[0] == "spooled"
    after = [post(n) for n in (4, 5)]
    assert [status for status, _ in after] == ["accepted", "accepted"]
    assert [d.request_uuid for d in outbox(rt)] == [
        first[1].lower(),
        other.request_uuid,
        behind[1].lower(),
        *(u.lower() for _, u in after),
    ]
    assert rt.redis.xlen(SPOOL_KEY) == 0
