"""The schema of every error answer; JSON answers with an ETag over their content, and 304
when the client already has it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Response, request
from marshmallow import Schema, fields


class ErrorSchema(Schema):
    """Every error answer: a fixed `error` label, a message for people, and for invalid input
    the messages by field."""

    error = fields.String(required=True)
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields")


def conditional(body: str | bytes, etag: str, mimetype: str) -> Response:
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = Response(body, mimetype=mimetype)
    response.set_etag(etag)
    response.headers["Cache-Control"] = "no-cache"
    return response


def json_with_etag(data: Any) -> Response:
    body = json.dumps(data, default=str, separators=(",", ":"))
    return conditional(body, hashlib.sha256(body.encode()).hexdigest()[:32], "application/json")
