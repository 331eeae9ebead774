"""What every webhook ingress shares (Cloud's `/webhooks/bitbucket`, Data Center's
`/webhooks/bitbucket-dc`): the size limit, the signature check against every accepted secret
(rotation), header limits, and storing a checked delivery in the outbox, or the Redis spool
while the database is down, before the answer, then enqueueing its processing.

Deduplication is the outbox's (`store_deliveries`: the request id, and the event key with the
body's hash); the views only say what a delivery is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import redis
from flask import Response, current_app, jsonify, request
from marshmallow import Schema, fields, validate
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.webhooks import signature_valid, storable_text
from app.config import Settings
from app.outbox import (
    DeliverySpool,
    IncomingDelivery,
    database_unavailable,
    enqueue_stored,
    store_deliveries,
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
    if spool.waiting():
        # Older deliveries wait for the database: queue behind them, so the outbox keeps the
        # order Bitbucket sent them in, and try to move them all once this answer is sent.
        return _spooled(rt, spool, delivery, drain=True)
    try:
        with rt.sessions.begin() as session:
            inserted = store_deliveries(session, [delivery])
    except SQLAlchemyError as exc:
        if not database_unavailable(exc):
            raise
        log.warning(
            "database unavailable; delivery goes to the spool",
            extra={"request_uuid": delivery.request_uuid, "error": type(exc).__name__},
        )
        return _spooled(rt, spool, delivery, drain=False)
    delivery_id = inserted.get(delivery.request_uuid)
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
