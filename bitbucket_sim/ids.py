"""Deterministic identifiers, hashes and timestamps, and the clock used for live changes."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
"""Everything generated from the seed happened before this instant."""


class IdSource:
    """Identifiers drawn from one seeded random stream, so a seed always gives the same ids."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def uuid(self) -> str:
        """A version-4 UUID in braces, as Bitbucket writes them in bodies."""
        return "{" + self.bare_uuid() + "}"

    def bare_uuid(self) -> str:
        """A version-4 UUID without braces."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def commit_hash(self) -> str:
        """A 40-hex-digit commit hash."""
        return f"{self.rng.getrandbits(160):040x}"

    def account_id(self) -> str:
        """An Atlassian account id in the `557058:<uuid>` form."""
        return "557058:" + self.bare_uuid()

    def moment_between(self, start: datetime, end: datetime) -> datetime:
        """A timestamp with microseconds, uniformly between `start` and `end`."""
        span = int((end - start).total_seconds() * 1_000_000)
        return start + timedelta(microseconds=self.rng.randint(0, max(span, 0)))


def iso(moment: datetime) -> str:
    """Bitbucket's timestamp format: ISO 8601, microseconds, `+00:00`."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    """Read an ISO timestamp or date; naive values are taken as UTC."""
    cleaned = text.strip()
    if cleaned.endswith("Z"):
        cleaned = cleaned[:-1] + "+00:00"
    moment = datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def short_hash(commit_hash: str) -> str:
    """The 12-character short hash used in pull request payloads."""
    return commit_hash[:12]


def braced(value: str) -> str:
    """`{uuid}` whether or not the braces were given."""
    bare = value.strip().strip("{}")
    return "{" + bare + "}"


class EventClock:
    """Wall-clock time for live changes, never going backwards and never before the seed data.

    Generated data is dated before `BASE_TIME`; live changes must sort after it even when
    the machine clock is earlier, and two changes never share a timestamp.
    """

    def __init__(self, floor: datetime = BASE_TIME) -> None:
        self._last = floor
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The next timestamp: the wall clock, or one microsecond after the previous one."""
        with self._lock:
            wall = datetime.now(UTC)
            self._last = max(wall, self._last + timedelta(microseconds=1))
            return self._last
