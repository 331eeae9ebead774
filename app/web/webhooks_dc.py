"""`POST /webhooks/bitbucket-dc`: the thin ingress for Bitbucket Data Center.

The same steps as Cloud's `/webhooks/bitbucket` (`app.web.ingress`): the size limit, the
signature (`X-Hub-Signature`, every secret of `BITBUCKET_WEBHOOK_SECRET`, so it rotates),
headers and body validated, the delivery stored (outbox, or the Redis spool while the
database is down) and deduplicated on `X-Request-Id` and on the body's hash before the
answer, processing enqueued. The delivery keeps the source's identity: its repository is
stored under the bbsync workspace `{host}/{KEY}` and the UUID the Data Center sync gives it.
`diagnostics:ping` (the "Test connection" button) is answered 200 and stores nothing.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, jsonify, request
from marshmallow import ValidationError

from app.bitbucket.datacenter_webhooks import (
    DC_HANDLED_EVENTS,
    PING,
    DataCenterHeadersSchema,
    DataCenterSignedHeadersSchema,
    event_repository,
    load_dc_event,
)
from app.bitbucket.webhooks import UnusableBody, parse_body_text
from app.outbox import IncomingDelivery
from app.sync.datacenter import stable_uuid, workspace_key
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

webhooks_dc = Blueprint("webhooks_dc", __name__)

_headers_schema = DataCenterHeadersSchema()
# Headers kept with a delivery (never the signature: it is of no use once checked).
KEPT_HEADERS = ("X-Event-Key", "X-Request-Id", "User-Agent", "Content-Type")

WEBHOOK_BODY = {
    "type": "object",
    "description": "Data Center's event payload (`eventKey`, `date`, `actor` and the entity); "
    "events bbsync handles must carry their repository (or project)",
}


@webhooks_dc.post("/webhooks/bitbucket-dc")
@documented(
    summary="Bitbucket Data Center webhook deliveries",
    auth="signature",
    headers=DataCenterSignedHeadersSchema,
    body=WEBHOOK_BODY,
    responses={
        200: Reply(
            WebhookAnswerSchema,
            "Already received (same X-Request-Id or body), or a diagnostics:ping",
        ),
        202: Reply(
            WebhookAnswerSchema,
            "Stored (accepted or ignored), or spooled while the database is down",
        ),
        400: Reply(ErrorSchema, "Headers or body missing, malformed or not the event's shape"),
        404: Reply(ErrorSchema, "No Data Center source is configured (BITBUCKET_DC_URL)"),
        413: Reply(ErrorSchema, "Body larger than BBSYNC_WEBHOOK_MAX_BYTES"),
        503: Reply(ErrorSchema, "Neither the database nor the spool could store it; retry"),
    },
)
def receive_datacenter() -> Any:
    """Verify, validate, deduplicate and store one Data Center delivery, then answer;
    processing is queued. Bitbucket retries on a 5xx or no answer."""
    started = time.monotonic()
    response = _receive()
    answered(runtime(), started)
    return response


def _receive() -> Any:
    rt = runtime()
    settings = rt.settings
    server = settings.datacenter
    if server is None:
        return error(404, "not_configured", "no Data Center source (BITBUCKET_DC_URL) is set")
    raw = request.get_data(cache=True)
    answer = refused(raw, settings)
    if answer is not None:
        return answer
    kept, answer = kept_headers(KEPT_HEADERS)
    if answer is not None:
        return answer
    if kept.get("X-Event-Key") == PING:
        return jsonify(status="ping"), 200
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
    handled = event_key in DC_HANDLED_EVENTS
    repository: dict[str, Any] | None = None
    if handled:
        try:
            repository = event_repository(event_key, load_dc_event(event_key, body))
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
    uuid, full_name = None, None
    if repository is not None:
        uuid = stable_uuid(server, "repo", repository["id"])
        full_name = f"{workspace_key(server, repository['project']['key'])}/{repository['slug']}"
    delivery = IncomingDelivery(
        request_uuid=headers["request_id"].strip("{}").lower(),
        hook_uuid=None,
        event_key=event_key,
        attempt=1,
        headers=stored_headers,
        raw=raw,
        handled=handled,
        repository_uuid=uuid,
        repository_full_name=full_name,
        body=body,
        sanitized=sanitized or headers_sanitized,
        body_text=body_text,
    )
    return store_and_enqueue(rt, delivery)
