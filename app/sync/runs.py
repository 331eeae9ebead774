"""Recording a sync run: what it did, what it cost, how it ended (one place for every phase)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient
from app.bitbucket.errors import BitbucketError, RetryLater
from app.models import SyncRun, SyncStatus, utcnow


@contextmanager
def recorded_run(
    session: Session,
    commit: Callable[[], None],
    client: BitbucketClient,
    run: SyncRun,
    counts: Callable[[], dict[str, Any]],
) -> Iterator[SyncRun]:
    """Store `run` as running, then as succeeded, paused (out of budget: `RetryLater`) or
    failed (`BitbucketError`) with the error, the calls spent and `counts()`. The error is
    re-raised after it is recorded; uncommitted work of a failed run is rolled back."""
    run.status = SyncStatus.RUNNING.value
    session.add(run)
    commit()
    calls_before, started = client.ledger.total, time.monotonic()
    try:
        yield run
        run.status = SyncStatus.SUCCEEDED.value
    except RetryLater as exc:
        session.rollback()
        run.status, run.error = SyncStatus.PAUSED.value, str(exc)
        raise
    except BitbucketError as exc:
        session.rollback()
        run.status, run.error = SyncStatus.FAILED.value, str(exc)
        raise
    finally:
        run.counts = dict(counts())
        run.api_calls = (run.api_calls or 0) + client.ledger.total - calls_before
        run.calls_by_family = dict(client.ledger.by_family)
        run.finished_at = utcnow()
        run.duration_ms = (run.duration_ms or 0) + int((time.monotonic() - started) * 1000)
        session.add(run)
        commit()
