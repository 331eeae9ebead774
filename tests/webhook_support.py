"""Helpers to send Bitbucket-shaped, signed webhook deliveries in tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

SECRET = "test-secret"


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_headers(
    event_key: str, body: bytes, *, secret: str | None = SECRET, request_uuid: str | None = None
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Bitbucket-Webhooks/2.0",
        "X-Event-Key": event_key,
        "X-Request-UUID": request_uuid or str(uuid.uuid4()),
        "X-Hook-UUID": str(uuid.uuid4()),
        "X-Attempt-Number": "1",
    }
    if secret is not None:
        headers["X-Hub-Signature"] = sign(body, secret)
    return headers


def repository(
    slug: str = "billing",
    uuid_: str = "{1c2b3a4d-0000-4000-8000-000000000001}",
    api_url: str = "https://api.bitbucket.org/2.0",
) -> dict[str, Any]:
    return {
        "type": "repository",
        "uuid": uuid_,
        "full_name": f"acme/{slug}",
        "name": slug.title(),
        "is_private": True,
        "links": {"self": {"href": f"{api_url}/repositories/acme/{slug}"}},
        "project": {
            "type": "project",
            "uuid": "{77777777-0000-4000-8000-000000000001}",
            "key": "PAY",
            "name": "Payments",
        },
        "workspace": {
            "type": "workspace",
            "uuid": "{88888888-0000-4000-8000-000000000001}",
            "slug": "acme",
            "name": "Acme",
        },
    }


def pullrequest_body(
    number: int, state: str, updated_on: str, title: str = "Add metrics", **repo: Any
) -> dict[str, Any]:
    return {
        "pullrequest": {
            "id": number,
            "title": title,
            "state": state,
            "author": {"display_name": "Dana", "account_id": "557058:dana"},
            "source": {"branch": {"name": "feature/x"}, "commit": {"hash": "abcdef123456"}},
            "destination": {"branch": {"name": "main"}, "commit": {"hash": "123456abcdef"}},
            "merge_commit": {"hash": "fedcba654321"} if state == "MERGED" else None,
            "comment_count": 2,
            "task_count": 0,
            "created_on": "2026-11-01T10:00:00.000001+00:00",
            "updated_on": updated_on,
        },
        "repository": repository(**repo),
        "actor": {"display_name": "Dana", "account_id": "557058:dana"},
    }


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()
