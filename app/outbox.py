"""The outbox of webhook deliveries, and the Redis spool that stands in for it while the
database is down.

A delivery is stored once: a second copy with the same `X-Request-UUID` (Bitbucket's retry)
or the same body (a captured delivery replayed under a new, unsigned UUID) is a duplicate.
While the database cannot take a delivery, the ingress appends it (headers and raw body,
after the signature and the schema were checked) to a Redis stream; `DeliverySpool.drain`
moves the stream into the outbox in order once the database answers again. Draining is
idempotent through the same two keys, so a drain interrupted between the commit and the
stream trim only finds duplicates the next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import redis
from sqlalchemy import Engine, Insert, Table, Text, bindparam, cast, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from app.bitbucket.webhooks import UnusableBody, parse_body_text
from app.db import retry_dropped
from app.models import DeliveryStatus, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

SPOOL_KEY = "bbsync:ingress:spool"
# Entries the drain could not turn into a delivery (none are expected: each was validated
# before it was spooled); kept for an operator rather than dropped.
SPOOL_DEAD_KEY = "bbsync:ingress:spool-dead"
DRAIN_LOCK_KEY = "bbsync:ingress:spool-drain"
DRAIN_LOCK_MS = 60_000
DRAIN_BATCH = 200

# Compare-and-delete: only the drainer holding the lock releases it.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def database_unavailable(exc: SQLAlchemyError) -> bool:
    """True when the error says the database cannot be reached (not that a row is bad)."""
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@dataclass
class IncomingDelivery:
    """A checked delivery, before it is stored: what the outbox row and the spool need."""

    request_uuid: str
    hook_uuid: str | None
    event_key: str
    attempt: int
    headers: dict[str, str]
    raw: bytes
    handled: bool
    repository_uuid: str | None = None
    repository_full_name: str | None = None
    received_at: datetime = field(default_factory=utcnow)
    body: Any = None
    sanitized: bool = False
    # The JSON text stored for `body` (see `parse_body_text`); serialised from `body` if unset.
    body_text: str | None = None

    @property
    def body_sha256(self) -> str:
        # With the event key: `repo:created` and `repo:deleted` of one repository can carry
        # byte-identical bodies (`{actor, repository}`), and both must be processed.
        return hashlib.sha256(self.event_key.encode() + b"\n" + self.raw).hexdigest()

    def row(self, now: datetime) -> dict[str, Any]:
        return {
            "request_uuid": self.request_uuid,
            "body_sha256": self.body_sha256,
            "body_sanitized": self.sanitized,
            "hook_uuid": self.hook_uuid,
            "event_key": self.event_key,
            "attempt": self.attempt,
            "headers": self.headers,
            "body_json": self.body_text if self.body_text is not None else json.dumps(self.body),
            "repository_uuid": self.repository_uuid,
            "repository_full_name": self.repository_full_name,
            # Optimistically `queued`: one transaction on the common path. If the broker
            # turns out to be down it goes back to `pending`; a crash in between leaves it
            # `queued`, which the requeue task also sends again after a while.
            "status": (DeliveryStatus.QUEUED if self.handled else DeliveryStatus.IGNORED).value,
            "received_at": self.received_at,
            "enqueued_at": now if self.handled else None,
        }

    def spool_fields(self) -> dict[str, bytes]:
        meta = {
            "request_uuid": self.request_uuid,
            "hook_uuid": self.hook_uuid,
            "event_key": self.event_key,
            "attempt": self.attempt,
            "headers": self.headers,
            "handled": self.handled,
            "repository_uuid": self.repository_uuid,
            "repository_full_name": self.repository_full_name,
            "received_at": self.received_at.isoformat(),
        }
        # Headers were made storable by the ingress; ASCII-escaped JSON keeps them exact.
        return {"meta": json.dumps(meta).encode(), "body": self.raw}

    @classmethod
    def from_spool(cls, fields: dict[bytes, bytes]) -> IncomingDelivery:
        """Rebuild a spooled delivery; `UnusableBody` or `ValueError` when it is corrupt."""
        meta = json.loads(fields[b"meta"])
        raw = fields[b"body"]
        body, text, sanitized = parse_body_text(raw)
        return cls(
            request_uuid=str(meta["request_uuid"]),
            hook_uuid=meta["hook_uuid"],
            event_key=str(meta["event_key"]),
            attempt=int(meta["attempt"]),
            headers=dict(meta["headers"]),
            raw=raw,
            handled=bool(meta["handled"]),
            repository_uuid=meta["repository_uuid"],
            repository_full_name=meta["repository_full_name"],
            received_at=datetime.fromisoformat(meta["received_at"]),
            body=body,
            sanitized=sanitized,
            body_text=text,
        )


@cache
def _insert_statement(dialect: str) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id, request_uuid, built once per dialect (so
    its compiled form is cached). The body is bound as JSON text, cast to JSONB on PostgreSQL:
    the text is stored as it came, never parsed and re-serialised on the way."""
    table: Table = WebhookDelivery.__table__  # type: ignore[assignment]
    body_json = bindparam("body_json", type_=Text)
    if dialect == "postgresql":
        return (
            postgresql.insert(table)
            .values(body=cast(body_json, JSONB))
            .on_conflict_do_nothing()
            .returning(table.c.id, table.c.request_uuid)
        )
    return (
        sqlite.insert(table)
        .values(body=body_json)
        .on_conflict_do_nothing()
        .returning(table.c.id, table.c.request_uuid)
    )


def store_deliveries(session: Session, deliveries: Sequence[IncomingDelivery]) -> dict[str, int]:
    """Insert `deliveries` in order, skipping duplicates (same request UUID or same body).

    Returns the ids of those inserted, by request UUID. The caller commits.
    """
    if not deliveries:
        return {}
    now = utcnow()
    stmt = _insert_statement(session.get_bind().dialect.name)
    inserted: dict[str, int] = {}
    for delivery in deliveries:  # one at a time: ids follow the order they came in
        row = session.execute(stmt, delivery.row(now)).first()
        if row is not None:
            inserted[row.request_uuid] = row.id
    return inserted


def insert_delivery(engine: Engine, delivery: IncomingDelivery) -> int | None:
    """Store one delivery in a single autocommitted statement (stored and deduplicated in
    one round trip); its id, or None for a duplicate. `engine` is `Runtime.statement_engine`
    (autocommit, no ping at checkout): a pooled connection the server has dropped is found
    by the statement itself and tried once more on a new one."""
    stmt = _insert_statement(engine.dialect.name)
    row = delivery.row(utcnow())

    def insert() -> int | None:
        with engine.connect() as connection:
            stored = connection.execute(stmt, row).first()
        return None if stored is None else int(stored.id)

    return retry_dropped(insert)


def mark_pending(sessions: sessionmaker[Session], delivery_ids: Sequence[int]) -> None:
    """Back to `pending` for the requeue task, since the broker did not take them."""
    if not delivery_ids:
        return
    try:
        with sessions.begin() as session:
            session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id.in_(delivery_ids),
                    WebhookDelivery.status == DeliveryStatus.QUEUED.value,
                )
                .values(status=DeliveryStatus.PENDING.value, enqueued_at=None)
            )
    except SQLAlchemyError:
        # Stored as `queued`: the requeue task sends them once they have waited long enough.
        log.warning("deliveries left queued without a broker", extra={"count": len(delivery_ids)})


def enqueue_stored(
    sessions: sessionmaker[Session], delivery_ids: Sequence[int], enqueue: Callable[[int], bool]
) -> int:
    """Send each stored delivery to the broker; those it does not take go back to `pending`.
    Returns how many were sent."""
    for sent, delivery_id in enumerate(delivery_ids):
        if not enqueue(delivery_id):
            mark_pending(sessions, delivery_ids[sent:])
            return sent
    return len(delivery_ids)


@dataclass
class DrainResult:
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    left: int = 0
    skipped: bool = False  # another process holds the drain lock


class DeliverySpool:
    """Deliveries waiting in a Redis stream for the database (see the module docstring).

    The stream is only as durable as the Redis behind it: run that Redis with
    `appendonly yes` so that a Redis restart during a database outage loses nothing.
    """

    def __init__(self, client: redis.Redis, max_entries: int) -> None:
        self.client = client
        self.max_entries = max_entries

    def depth(self) -> int:
        """Entries waiting; raises `redis.RedisError` when Redis does not answer."""
        return int(self.client.xlen(SPOOL_KEY))  # type: ignore[arg-type]

    def waiting(self) -> bool:
        """True when deliveries wait in the spool (False too when Redis does not answer)."""
        try:
            return self.depth() > 0
        except redis.RedisError:
            return False

    def can_take(self) -> bool:
        try:
            return self.max_entries > 0 and self.depth() < self.max_entries
        except redis.RedisError:
            return False

    def add(self, delivery: IncomingDelivery) -> bool:
        """Append `delivery`; False when the spool is off, full, or Redis does not answer."""
        if self.max_entries <= 0:
            return False
        try:
            if self.depth() >= self.max_entries:
                log.error("delivery spool full", extra={"max_entries": self.max_entries})
                return False
            self.client.xadd(SPOOL_KEY, delivery.spool_fields())  # type: ignore[arg-type]
        except redis.RedisError as exc:
            log.error(
                "delivery not spooled: redis unavailable", extra={"error": type(exc).__name__}
            )
            return False
        return True

    def drain(
        self,
        sessions: sessionmaker[Session],
        enqueue: Callable[[int], bool],
        limit: int = 5000,
    ) -> DrainResult:
        """Move up to `limit` spooled deliveries into the outbox, oldest first, and send the
        handled ones to the broker. One drainer at a time (a Redis lock); a database that is
        still down raises its `SQLAlchemyError` with nothing lost."""
        result = DrainResult()
        token = uuid.uuid4().hex
        if not self.client.set(DRAIN_LOCK_KEY, token, nx=True, px=DRAIN_LOCK_MS):
            result.skipped = True
            return result
        try:
            while result.stored + result.duplicates + result.dead < limit:
                entries = self.client.xrange(SPOOL_KEY, "-", "+", count=DRAIN_BATCH)
                if not entries:
                    break
                self._drain_batch(entries, sessions, enqueue, result)  # type: ignore[arg-type]
                self.client.pexpire(DRAIN_LOCK_KEY, DRAIN_LOCK_MS)
        finally:
            self.client.eval(_RELEASE, 1, DRAIN_LOCK_KEY, token)
        result.left = self.depth()
        if result.stored or result.dead:
            log.info(
                "delivery spool drained",
                extra={
                    "stored": result.stored,
                    "duplicates": result.duplicates,
                    "dead": result.dead,
                    "left": result.left,
                },
            )
        return result

    def _drain_batch(
        self,
        entries: list[tuple[bytes, dict[bytes, bytes]]],
        sessions: sessionmaker[Session],
        enqueue: Callable[[int], bool],
        result: DrainResult,
    ) -> None:
        readable: list[tuple[bytes, dict[bytes, bytes], IncomingDelivery]] = []
        for entry_id, fields in entries:
            try:
                readable.append((entry_id, fields, IncomingDelivery.from_spool(fields)))
            except (UnusableBody, ValueError, KeyError, TypeError) as exc:
                self._set_aside(entry_id, fields, str(exc), result)
        deliveries = [delivery for _, _, delivery in readable]
        try:
            with sessions.begin() as session:
                inserted = store_deliveries(session, deliveries)
        except SQLAlchemyError as exc:
            if database_unavailable(exc):
                raise
            # One entry the database refuses must not hold up the others behind it.
            inserted = self._one_by_one(readable, sessions, result)
        # Only after the commit: an interruption here leaves duplicates, never a gap.
        self.client.xdel(SPOOL_KEY, *[entry_id for entry_id, _ in entries])
        result.stored += len(inserted)
        result.duplicates += len(deliveries) - len(inserted)
        handled = [
            inserted[d.request_uuid] for d in deliveries if d.handled and d.request_uuid in inserted
        ]
        enqueue_stored(sessions, list(dict.fromkeys(handled)), enqueue)

    def _one_by_one(
        self,
        readable: list[tuple[bytes, dict[bytes, bytes], IncomingDelivery]],
        sessions: sessionmaker[Session],
        result: DrainResult,
    ) -> dict[str, int]:
        inserted: dict[str, int] = {}
        for entry_id, fields, delivery in readable:
            try:
                with sessions.begin() as session:
                    inserted.update(store_deliveries(session, [delivery]))
            except SQLAlchemyError as exc:
                if database_unavailable(exc):
                    raise
                self._set_aside(entry_id, fields, type(exc).__name__, result)
                result.duplicates -= 1  # counted below as read but not inserted
        return inserted

    def _set_aside(
        self, entry_id: bytes, fields: dict[bytes, bytes], error: str, result: DrainResult
    ) -> None:
        log.error(
            "spooled delivery unusable; moved aside",
            extra={"entry": entry_id.decode(), "error": error[:200]},
        )
        self.client.xadd(SPOOL_DEAD_KEY, fields)  # type: ignore[arg-type]
        self.client.xdel(SPOOL_KEY, entry_id)
        result.dead += 1
