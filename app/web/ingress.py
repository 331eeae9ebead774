"""What every webhook ingress shares (Cloud's `/webhooks/bitbucket`, Data Center's
`/webhooks/bitbucket-dc`): the size limit, the signature check against every accepted secret
(rotation), header limits, and storing a checked delivery in the outbox, or the Redis spool
while the database is down, before the answer, then enqueueing its processing.

Deduplication is the outbox's (`insert_delivery`: the request id, and the event key with the
body's hash, in the one statement that stores it); the views only say what a delivery is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from flask import Response, current_app, g, jsonify, request
from marshmallow import Schema, fields, validate
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.webhooks import signature_valid, storable_text
from app.config import Settings
from app.ops.telemetry import queue_ingress
from app.outbox import (
    SPOOL_KEY,
    DeliverySpool,
    IncomingDelivery,
    database_unavailable,
    enqueue_stored,
    insert_delivery,
)
from app.runtime import Runtime
from app.task_names import PROCESS_DELIVERY, enqueue_safely

log = logging.getLogger(__name__)

# Bitbucket's own values are a few dozen characters; anything longer is not a delivery.
MAX_HEADER_CHARS = 1024


class WebhookAnswerSchema(Schema):
    status = fields.String(
        required=True,
        validate=validate.OneOf(["accepted", "ignored", "duplicate", "spooled", "ping"]),
    )
    delivery = fields.Integer(metadata={"description": "The stored delivery's id"})
    queued = fields.Boolean(metadata={"description": "Enqueued now (else beat enqueues it)"})
    event = fields.String(metadata={"description": "The event key of an ignored event"})
    request_uuid = fields.String()


class SpoolWatch:
    """Whether deliveries wait in the spool, as this app last read it (`XLEN`, sent with each
    delivery's latency in the round trip that records it), so that the next delivery need
    not ask Redis again. A reading older than `max_age` seconds, or none, is read afresh;
    a delivery this app spooled makes the next one read afresh."""

    def __init__(self, max_age: float = 1.0) -> None:
        self.max_age = max_age
        self._seen: tuple[int, float] | None = None

    def saw(self, depth: int) -> None:
        self._seen = (depth, time.monotonic())

    def forget(self) -> None:
        self._seen = None

    def waiting(self, spool: DeliverySpool) -> bool:
        seen = self._seen
        if seen is not None and time.monotonic() - seen[1] <= self.max_age:
            return seen[0] > 0
        try:
            depth = spool.depth()
        except redis.RedisError:
            self.forget()
            return False
        self.saw(depth)
        return depth > 0


def answered(rt: Runtime, started: float) -> None:
    """After a delivery's answer: record its latency and read the spool's depth in one round
    trip (what `SpoolWatch` trusts for the next delivery)."""
    watch: SpoolWatch = current_app.extensions["bbsync.spool_watch"]
    try:
        pipe = rt.redis.pipeline(transaction=False)
        queue_ingress(pipe, time.monotonic() - started)
        pipe.xlen(SPOOL_KEY)
        depth = int(pipe.execute()[-1])
        if g.get("bbsync_spooled"):
            watch.forget()  # its drain runs after the answer: the next delivery reads afresh
        else:
            watch.saw(depth)
    except redis.RedisError:
        log.warning("ingress latency not recorded")
        watch.forget()


def error(status: int, error: str, message: str, **extra: Any) -> Any:
    return jsonify(error=error, message=message, **extra), status


def refused(raw: bytes, settings: Settings) -> Any | None:
    """The answer refusing a body too large or not signed by an accepted secret; None when
    the delivery may be read. Every secret of `BITBUCKET_WEBHOOK_SECRET` is tried (rotation)."""
    if len(raw) > settings.webhook_max_bytes:
        return error(
            413,
            "payload_too_large",
            f"body is {len(raw)} bytes; at most {settings.webhook_max_bytes} accepted",
        )
    secrets = [s.reveal() for s in settings.webhook_secrets]
    if secrets and not signature_valid(raw, request.headers.get("X-Hub-Signature"), secrets):
        return error(
            401, "invalid_signature", "X-Hub-Signature missing or not the HMAC-SHA256 of the body"
        )
    return None


def kept_headers(names: Iterable[str]) -> tuple[dict[str, str], Any | None]:
    """The named headers present (as spelled in `names`: header names are case-insensitive),
    and the answer refusing any that is too long (None when all fit)."""
    kept = {name: request.headers[name] for name in names if name in request.headers}
    too_long = {
        n: [f"longer than {MAX_HEADER_CHARS} characters"]
        for n, v in kept.items()
        if len(v) > MAX_HEADER_CHARS
    }
    if too_long:
        return kept, error(400, "invalid_headers", "webhook headers are too long", fields=too_long)
    return kept, None


def storable_headers(kept: dict[str, str]) -> tuple[dict[str, str], bool]:
    """The kept headers as stored: text the database cannot hold is replaced (as in bodies)."""
    cleaned = {name: storable_text(value) for name, value in kept.items()}
    return cleaned, cleaned != kept


def store_and_enqueue(rt: Runtime, delivery: IncomingDelivery) -> Any:
    """Store a checked delivery (outbox, or the spool while the database is down), answer,
    and enqueue its processing when it is handled. A duplicate answers 200."""
    if delivery.sanitized:
        log.warning(
            "delivery body sanitised: unstorable text replaced",
            extra={"request_uuid": delivery.request_uuid, "event": delivery.event_key},
        )
    spool = DeliverySpool(rt.redis, rt.settings.spool_max_entries)
    if current_app.extensions["bbsync.spool_watch"].waiting(spool):
        # Older deliveries wait for the database: queue behind them, so the outbox keeps the
        # order Bitbucket sent them in, and try to move them all once this answer is sent.
        return _spooled(rt, spool, delivery, drain=True)
    try:
        delivery_id = insert_delivery(rt.statement_engine, delivery)
    except SQLAlchemyError as exc:
        if not database_unavailable(exc):
            raise
        log.warning(
            "database unavailable; delivery goes to the spool",
            extra={"request_uuid": delivery.request_uuid, "error": type(exc).__name__},
        )
        return _spooled(rt, spool, delivery, drain=False)
    if delivery_id is None:
        return jsonify(status="duplicate", request_uuid=delivery.request_uuid), 200
    if not delivery.handled:
        return jsonify(status="ignored", event=delivery.event_key, delivery=delivery_id), 202
    queued = enqueue_stored(rt.sessions, [delivery_id], _enqueuer()) == 1
    return jsonify(status="accepted", delivery=delivery_id, queued=queued), 202


def _enqueuer() -> Callable[[int], bool]:
    producer = current_app.extensions["bbsync.producer"]
    return lambda delivery_id: enqueue_safely(producer, PROCESS_DELIVERY, delivery_id)


def _spooled(rt: Runtime, spool: DeliverySpool, delivery: IncomingDelivery, drain: bool) -> Any:
    g.bbsync_spooled = True
    if not spool.add(delivery):
        log.error(
            "delivery not stored: database and spool unavailable",
            extra={"request_uuid": delivery.request_uuid},
        )
        return error(503, "database_unavailable", "delivery not stored; retry later")
    response: Response = jsonify(status="spooled", request_uuid=delivery.request_uuid)
    response.status_code = 202
    if drain:
        enqueue = _enqueuer()
        response.call_on_close(lambda: _drain_after_answer(rt, spool, enqueue))
    return response


def _drain_after_answer(rt: Runtime, spool: DeliverySpool, enqueue: Callable[[int], bool]) -> None:
    """Runs once the answer is sent: Bitbucket never waits for the drain."""
    try:
        spool.drain(rt.sessions, enqueue, limit=1000)
    except SQLAlchemyError as exc:
        # Still down: the deliveries stay in the spool for the next request or beat's drain.
        log.info("spool not drained: database unavailable", extra={"error": type(exc).__name__})
    except redis.RedisError as exc:
        log.warning("spool not drained: redis unavailable", extra={"error": type(exc).__name__})
