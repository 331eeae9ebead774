"""`POST /webhooks/bitbucket`: the thin ingress.

Verify the signature, validate headers and body, deduplicate on `X-Request-UUID`, store the
delivery (the outbox) and only then answer; processing is enqueued by task name on queue
`events`. A broker that is down costs nothing: the delivery is stored and beat re-enqueues
it. A database that is down answers 503 so Bitbucket tries again. Bitbucket is never called.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.bitbucket.webhooks import (
    HANDLED_EVENTS,
    DeliveryHeadersSchema,
    load_event,
    signature_valid,
)
from app.models import DeliveryStatus, WebhookDelivery, utcnow
from app.tasks import PROCESS_DELIVERY, enqueue_safely
from app.telemetry import record_ingress
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


def _error(status: int, error: str, message: str, **extra: Any) -> Any:
    return jsonify(error=error, message=message, **extra), status


@webhooks.post("/webhooks/bitbucket")
def receive() -> Any:
    started = time.monotonic()
    response = _receive()
    record_ingress(runtime().redis, time.monotonic() - started)
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
    try:
        # Header names are case-insensitive; the schema names them as Bitbucket spells them.
        headers = _headers_schema.load(
            {name: request.headers[name] for name in KEPT_HEADERS if name in request.headers}
        )
    except ValidationError as exc:
        return _error(
            400,
            "invalid_headers",
            "required webhook headers are missing or malformed",
            fields=exc.messages,
        )
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, "invalid_json", f"body is not JSON: {exc}")
    except RecursionError:
        return _error(400, "invalid_json", "body is nested too deeply")
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

    delivery = WebhookDelivery(
        request_uuid=headers["request_uuid"].strip("{}").lower(),
        hook_uuid=headers["hook_uuid"],
        event_key=event_key,
        attempt=headers["attempt"],
        headers={k: request.headers[k] for k in KEPT_HEADERS if k in request.headers},
        body=body,
        repository_uuid=repository.get("uuid"),
        repository_full_name=repository.get("full_name"),
        # Optimistically `queued`: one transaction on the common path. If the broker turns
        # out to be down it goes back to `pending`; a crash in between leaves it `queued`,
        # which the requeue task also sends again after a while.
        status=(DeliveryStatus.QUEUED if handled else DeliveryStatus.IGNORED).value,
        enqueued_at=utcnow() if handled else None,
    )
    session = rt.sessions()
    try:
        session.add(delivery)
        session.commit()
        delivery_id = delivery.id
    except IntegrityError:
        session.rollback()
        return jsonify(status="duplicate", request_uuid=delivery.request_uuid), 200
    except SQLAlchemyError as exc:
        session.rollback()
        log.error(
            "delivery not stored: database unavailable",
            extra={"request_uuid": delivery.request_uuid, "error": type(exc).__name__},
        )
        return _error(503, "database_unavailable", "delivery not stored; retry later")
    finally:
        session.close()
    if not handled:
        return jsonify(status="ignored", event=event_key, delivery=delivery_id), 202
    queued = enqueue_safely(
        current_app.extensions["bbsync.producer"], PROCESS_DELIVERY, delivery_id
    )
    if not queued:
        _mark_pending(delivery_id)
    return jsonify(status="accepted", delivery=delivery_id, queued=queued), 202


def _mark_pending(delivery_id: int) -> None:
    """Back to `pending` for the requeue task, since the broker did not take it."""
    try:
        with runtime().sessions.begin() as session:
            session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == DeliveryStatus.QUEUED.value,
                )
                .values(status=DeliveryStatus.PENDING.value, enqueued_at=None)
            )
    except SQLAlchemyError:
        # Stored as `queued`: the requeue task sends it once it has waited long enough.
        log.warning("delivery left queued without a broker", extra={"delivery": delivery_id})
