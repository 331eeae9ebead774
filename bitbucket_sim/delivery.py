"""Webhook delivery: one background worker posting events in order, with Bitbucket's retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

MAX_ATTEMPTS = 3
MAX_BODY_BYTES = 256 * 1024
USER_AGENT = "Bitbucket-Webhooks/2.0"
DC_USER_AGENT = "Bitbucket Data Center (bitbucket_sim)"


@dataclass(frozen=True)
class OutgoingDelivery:
    """One event for one subscription; retries reuse its `request_uuid`."""

    event_key: str
    hook_uuid: str
    url: str
    secret: str | None
    body: bytes
    request_uuid: str


def signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature` value: `sha256=<hex HMAC-SHA256 of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode_payload(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class WebhookDispatcher:
    """Posts deliveries from a queue on a daemon thread and records every attempt."""

    def __init__(
        self, timeout: float = 10.0, retry_delay: float = 0.5, datacenter: bool = False
    ) -> None:
        self.datacenter = datacenter
        self.timeout = timeout
        self.retry_delay = retry_delay
        self._queue: queue.Queue[OutgoingDelivery | None] = queue.Queue()
        self._log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        # Deliveries go straight to the receiver, never through a proxy from the environment.
        self._session.trust_env = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="bitbucket-sim-webhooks", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def enqueue(
        self, event_key: str, hook_uuid: str, url: str, secret: str | None, body: bytes
    ) -> str:
        """Queue one delivery; returns its request UUID."""
        request_uuid = str(uuid.uuid4())
        # Headers carry UUIDs bare; bodies carry them in braces.
        bare_hook = hook_uuid.strip("{}")
        self._queue.put(OutgoingDelivery(event_key, bare_hook, url, secret, body, request_uuid))
        return request_uuid

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def attempts(self, with_payload: bool = False) -> list[dict[str, Any]]:
        """Every attempt made so far, oldest first."""
        with self._lock:
            records = [dict(record) for record in self._log]
        if not with_payload:
            for record in records:
                record.pop("payload", None)
        return records

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            try:
                self._deliver(delivery)
            finally:
                self._queue.task_done()

    def _deliver(self, delivery: OutgoingDelivery) -> None:
        if len(delivery.body) > MAX_BODY_BYTES:
            self._record(delivery, 1, None, "not sent: body over 256 KB", 0.0)
            return
        for attempt in range(1, MAX_ATTEMPTS + 1):
            status, error, elapsed = self._post(delivery, attempt)
            self._record(delivery, attempt, status, error, elapsed)
            if status is not None and status < 500:
                return
            if attempt < MAX_ATTEMPTS:
                time.sleep(self.retry_delay)

    def _post(
        self, delivery: OutgoingDelivery, attempt: int
    ) -> tuple[int | None, str | None, float]:
        if self.datacenter:
            # Data Center documents exactly X-Request-Id, X-Event-Key and X-Hub-Signature.
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": DC_USER_AGENT,
                "X-Event-Key": delivery.event_key,
                "X-Request-Id": delivery.request_uuid,
            }
        else:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-Event-Key": delivery.event_key,
                "X-Request-UUID": delivery.request_uuid,
                "X-Hook-UUID": delivery.hook_uuid,
                "X-Attempt-Number": str(attempt),
            }
        if delivery.secret:
            headers["X-Hub-Signature"] = signature(delivery.secret, delivery.body)
        started = time.monotonic()
        try:
            response = self._session.post(
                delivery.url,
                data=delivery.body,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}", time.monotonic() - started
        response.close()
        return response.status_code, None, time.monotonic() - started

    def _record(
        self,
        delivery: OutgoingDelivery,
        attempt: int,
        status: int | None,
        error: str | None,
        elapsed: float,
    ) -> None:
        record = {
            "event_key": delivery.event_key,
            "request_uuid": delivery.request_uuid,
            "hook_uuid": delivery.hook_uuid,
            "url": delivery.url,
            "attempt": attempt,
            "status_code": status,
            "error": error,
            "duration_ms": round(elapsed * 1000, 1),
            "delivered_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "payload": json.loads(delivery.body),
        }
        with self._lock:
            self._log.append(record)
