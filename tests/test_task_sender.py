"""The ingress's task sender writes, on a Redis broker, the very message Celery and kombu
would write, and a real worker runs what it sends."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis

from app.task_names import PROCESS_DELIVERY, QUEUE_EVENTS, TaskSender, producer

VARYING = {"id", "root_id", "correlation_id", "delivery_tag"}


def _without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k not in VARYING}
    return value


def test_the_message_on_redis_is_the_one_celery_writes(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    app = producer(redis_url)
    app.send_task(PROCESS_DELIVERY, args=(41,), retry=False)
    sender = TaskSender(app)
    assert sender.client is not None  # the fast path is the one under test
    sent = sender.send_task(PROCESS_DELIVERY, args=(41,))
    theirs, ours = (json.loads(m) for m in reversed(client.lrange(QUEUE_EVENTS, 0, -1)))
    assert _without_ids(ours) == _without_ids(theirs)
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == sent.id
    assert ours["properties"]["correlation_id"] == sent.id
    assert base64.b64decode(ours["body"]) == base64.b64decode(theirs["body"])
    assert json.loads(base64.b64decode(ours["body"]))[0] == [41]
    client.close()


def test_other_brokers_and_countdowns_go_through_celery(redis_url: str) -> None:
    assert TaskSender(producer("amqp://guest:guest@127.0.0.1:5672//")).client is None
    client = redis.Redis.from_url(redis_url)
    sender = TaskSender(producer(redis_url))
    sender.send_task(PROCESS_DELIVERY, args=(1,), countdown=30)
    (message,) = (json.loads(m) for m in client.lrange(QUEUE_EVENTS, 0, -1))
    assert message["headers"]["eta"] is not None
    client.close()


def test_a_broker_that_is_down_fails_the_send_at_once() -> None:
    sender = TaskSender(producer("redis://127.0.0.1:1/0"))
    with pytest.raises(redis.ConnectionError):
        sender.send_task(PROCESS_DELIVERY, args=(1,))
