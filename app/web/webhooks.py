"""`POST /webhooks/bitbucket`: the thin ingress.

Verify the signature (on the raw bytes), validate headers and body, deduplicate on
`X-Request-UUID` and on the body's hash, store the delivery (the outbox) and only then answer;
processing is enqueued by task name on queue `events`. A broker that is down costs nothing:
the delivery is stored and beat re-enqueues it. A database that is down costs nothing either
while Redis answers: the delivery waits in the Redis spool (202) and is drained into the outbox
in order once the database is back; only when neither can take it the answer is 503, so
Bitbucket tries again. Bitbucket is never called.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.webhooks import (
    HANDLED_EVENTS,
    DeliveryHeadersSchema,
    UnusableBody,
    load_event,
    parse_body_text,
    signature_valid,
    storable_text,
)
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
from app.web import runtime

log = logging.getLogger(__name__)

webhooks = Blueprint("webhooks", __name__)

_headers_schema = DeliveryHeadersSchema()
# Headers kept with a delivery (never the signature: it is of no use once checked).
KEPT_HEADERS = (
    "X-Event-Key",
    "X-Request-UUID",
    "X-Hook-UUID",
    "X-Attempt-Number",
    "User-Agent",
    "Content-Type",
)
# Bitbucket's own values are a few dozen characters; anything longer is not a delivery.
MAX_HEADER_CHARS = 1024


def _error(status: int, error: str, message: str, **extra: Any) -> Any:
    return jsonify(error=error, message=message, **extra), status


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


@webhooks.post("/webhooks/bitbucket")
def receive() -> Any:
    started = time.monotonic()
    response = _receive()
    watch: SpoolWatch = current_app.extensions["bbsync.spool_watch"]
    try:
        pipe = runtime().redis.pipeline(transaction=False)
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
    return response


def _receive() -> Any:
    rt = runtime()
    settings = rt.settings
    raw = request.get_data(cache=True)
    if len(raw) > settings.webhook_max_bytes:
        return _error(
            413,
            "payload_too_large",
            f"body is {len(raw)} bytes; at most {settings.webhook_max_bytes} accepted",
        )
    secrets = [s.reveal() for s in settings.webhook_secrets]
    if secrets and not signature_valid(raw, request.headers.get("X-Hub-Signature"), secrets):
        return _error(
            401, "invalid_signature", "X-Hub-Signature missing or not the HMAC-SHA256 of the body"
        )
    # Header names are case-insensitive; the schema names them as Bitbucket spells them.
    # A repeated header arrives joined with commas, and fails its pattern like any bad value.
    kept = {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
    too_long = {
        n: [f"longer than {MAX_HEADER_CHARS} characters"]
        for n, v in kept.items()
        if len(v) > MAX_HEADER_CHARS
    }
    if too_long:
        return _error(400, "invalid_headers", "webhook headers are too long", fields=too_long)
    try:
        headers = _headers_schema.load(kept)
    except ValidationError as exc:
        return _error(
            400,
            "invalid_headers",
            "required webhook headers are missing or malformed",
            fields=exc.messages,
        )
    try:
        body, body_text, sanitized = parse_body_text(raw)
    except UnusableBody as exc:
        return _error(400, "invalid_json", str(exc))
    event_key = headers["event_key"]
    handled = event_key in HANDLED_EVENTS
    repository: dict[str, Any] = {}
    if handled:
        try:
            repository = load_event(event_key, body, settings.bitbucket_api_url)["repository"]
        except ValidationError as exc:
            return _error(
                400,
                "invalid_body",
                f"{event_key} body does not match its schema",
                fields=exc.messages,
            )
    elif not isinstance(body, dict):
        return _error(400, "invalid_body", "body must be a JSON object")

    stored_headers, headers_sanitized = _storable_headers(kept)
    delivery = IncomingDelivery(
        request_uuid=headers["request_uuid"].strip("{}").lower(),
        hook_uuid=headers["hook_uuid"],
        event_key=event_key,
        attempt=headers["attempt"],
        headers=stored_headers,
        raw=raw,
        handled=handled,
        repository_uuid=repository.get("uuid"),
        repository_full_name=repository.get("full_name"),
        body=body,
        sanitized=sanitized or headers_sanitized,
        body_text=body_text,
    )
    if sanitized:
        log.warning(
            "delivery body sanitised: unstorable text replaced",
            extra={"request_uuid": delivery.request_uuid, "event": event_key},
        )
    spool = DeliverySpool(rt.redis, settings.spool_max_entries)
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
    if not handled:
        return jsonify(status="ignored", event=event_key, delivery=delivery_id), 202
    queued = enqueue_stored(rt.sessions, [delivery_id], _enqueuer()) == 1
    return jsonify(status="accepted", delivery=delivery_id, queued=queued), 202


def _storable_headers(kept: dict[str, str]) -> tuple[dict[str, str], bool]:
    """The kept headers as stored: text the database cannot hold is replaced (as in bodies)."""
    cleaned = {name: storable_text(value) for name, value in kept.items()}
    return cleaned, cleaned != kept


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
        return _error(503, "database_unavailable", "delivery not stored; retry later")
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
