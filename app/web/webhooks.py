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
from typing import Any

from flask import Blueprint, request
from marshmallow import ValidationError, fields

from app.bitbucket.webhooks import (
    HANDLED_EVENTS,
    DeliveryHeadersSchema,
    UnusableBody,
    load_event,
    parse_body_text,
)
from app.outbox import IncomingDelivery
from app.web import runtime
from app.web.ingress import (
    WebhookAnswerSchema,
    answered,
    error,
    kept_headers,
    refused,
    storable_headers,
    store_and_enqueue,
)
from app.web.openapi import Reply, documented
from app.web.responses import ErrorSchema

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


class WebhookHeadersSchema(DeliveryHeadersSchema):
    """The headers of a delivery as `DeliveryHeadersSchema` loads them, and the signature,
    which the view checks on the raw body before anything is loaded."""

    signature = fields.String(
        load_default=None,
        data_key="X-Hub-Signature",
        metadata={
            "description": "sha256=<hex HMAC-SHA256 of the body> with BITBUCKET_WEBHOOK_SECRET; "
            "required unless BBSYNC_ALLOW_UNSIGNED_WEBHOOKS"
        },
    )


WEBHOOK_BODY = {
    "type": "object",
    "description": "Bitbucket's event payload; events bbsync handles must carry their repository",
}


@webhooks.post("/webhooks/bitbucket")
@documented(
    summary="Bitbucket webhook deliveries",
    auth="signature",
    headers=WebhookHeadersSchema,
    body=WEBHOOK_BODY,
    responses={
        200: Reply(WebhookAnswerSchema, "Already received (same X-Request-UUID or body)"),
        202: Reply(
            WebhookAnswerSchema,
            "Stored (accepted or ignored), or spooled while the database is down",
        ),
        400: Reply(ErrorSchema, "Headers or body missing, malformed or not the event's shape"),
        413: Reply(ErrorSchema, "Body larger than BBSYNC_WEBHOOK_MAX_BYTES"),
        503: Reply(ErrorSchema, "Neither the database nor the spool could store it; retry"),
    },
)
def receive() -> Any:
    """Verify, validate, deduplicate and store one delivery, then answer; processing is queued.
    Bitbucket retries on a 5xx or no answer."""
    started = time.monotonic()
    response = _receive()
    answered(runtime(), started)
    return response


def _receive() -> Any:
    rt = runtime()
    settings = rt.settings
    raw = request.get_data(cache=True)
    answer = refused(raw, settings)
    if answer is not None:
        return answer
    # Header names are case-insensitive; the schema names them as Bitbucket spells them.
    # A repeated header arrives joined with commas, and fails its pattern like any bad value.
    kept, answer = kept_headers(KEPT_HEADERS)
    if answer is not None:
        return answer
    try:
        headers = _headers_schema.load(kept)
    except ValidationError as exc:
        return error(
            400,
            "invalid_headers",
            "required webhook headers are missing or malformed",
            fields=exc.messages,
        )
    try:
        body, body_text, sanitized = parse_body_text(raw)
    except UnusableBody as exc:
        return error(400, "invalid_json", str(exc))
    event_key = headers["event_key"]
    handled = event_key in HANDLED_EVENTS
    repository: dict[str, Any] = {}
    if handled:
        try:
            repository = load_event(event_key, body, settings.bitbucket_api_url)["repository"]
        except ValidationError as exc:
            return error(
                400,
                "invalid_body",
                f"{event_key} body does not match its schema",
                fields=exc.messages,
            )
    elif not isinstance(body, dict):
        return error(400, "invalid_body", "body must be a JSON object")

    stored_headers, headers_sanitized = storable_headers(kept)
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
    return store_and_enqueue(rt, delivery)
