"""Recording a sync run: what it did, what it cost, how it ended (one place for every phase).

A run is one sync of one kind (repositories, catalog, members, activity) of one workspace.
Under a task's `RunWatch` it holds the (kind, workspace) lock while it runs, so a second
sync arriving meanwhile is recorded as `skipped` and raises `SyncBusy`; its row carries a
heartbeat and the calls spent so far. A run whose heartbeat went stale lost its worker: it is
marked failed with what it spent and continued by a new run from its cursor, unless that
chain already lost its worker twice; then it is `parked` for an operator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient
from app.bitbucket.errors import BitbucketError, RetryLater
from app.models import SyncRun, SyncStatus, utcnow
from app.sync.liveness import SyncBusy, current_watch

log = logging.getLogger(__name__)

LOST = "worker lost"
# A chain of runs that lost its worker this many times is parked, not resumed again.
LOST_LIMIT = 2


@contextmanager
def recorded_run(
    session: Session,
    commit: Callable[[], None],
    client: BitbucketClient,
    run: SyncRun,
    counts: Callable[[], dict[str, Any]],
    *,
    resume: bool = False,
) -> Iterator[SyncRun]:
    """Store `run` as running, then as succeeded, paused (out of budget: `RetryLater`) or
    failed (`BitbucketError`) with the error, the calls spent and `counts()`. The error is
    re-raised after it is recorded; uncommitted work of a failed run is rolled back.

    With `resume`, the run yielded is the paused (or lost) run of the same kind and
    workspace when there is one, else `run`. Raises `SyncBusy` (after recording a skipped
    run) when another sync of the same kind and workspace holds the lock."""
    watch = current_watch()
    if watch is not None:
        holder = watch.hold(run.kind, run.workspace)
        if holder is not None:
            _record_skipped(session, commit, run, holder)
    try:
        if resume:
            run = resumable_run(session, run.kind, run.workspace) or run
        run.status = SyncStatus.RUNNING.value
        run.error = None
        run.finished_at = None
        run.heartbeat_at = utcnow()
        run.task_id = watch.task_id if watch is not None else None
        session.add(run)
        commit()
        base, calls_before, started = run.api_calls or 0, client.ledger.total, time.monotonic()
        if watch is not None:
            watch.track(run.id, client.ledger, base - calls_before)
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
            if watch is not None:
                watch.untrack()
            run.counts = dict(counts())
            run.api_calls = base + client.ledger.total - calls_before
            run.calls_by_family = dict(client.ledger.by_family)
            run.finished_at = run.heartbeat_at = utcnow()
            run.duration_ms = (run.duration_ms or 0) + int((time.monotonic() - started) * 1000)
            session.add(run)
            commit()
    finally:
        if watch is not None:
            watch.release(run.kind, run.workspace)


def _record_skipped(
    session: Session, commit: Callable[[], None], run: SyncRun, holder: str
) -> None:
    message = f"skipped: another {run.kind} sync of {run.workspace} is running ({holder})"
    log.info(
        "sync skipped: another is running",
        extra={"kind": run.kind, "workspace": run.workspace, "holder": holder},
    )
    now = utcnow()
    session.add(
        SyncRun(
            kind=run.kind,
            workspace=run.workspace,
            status=SyncStatus.SKIPPED.value,
            error=message,
            finished_at=now,
            counts={},
            calls_by_family={},
            api_calls=0,
            duration_ms=0,
        )
    )
    commit()
    raise SyncBusy(message)


def _latest(session: Session, kind: str, workspace: str) -> SyncRun | None:
    run: SyncRun | None = session.scalars(
        select(SyncRun)
        .where(
            SyncRun.kind == kind,
            SyncRun.workspace == workspace,
            SyncRun.status != SyncStatus.SKIPPED.value,
        )
        .order_by(SyncRun.started_at.desc(), SyncRun.id.desc())
        .limit(1)
    ).first()
    return run


def _was_lost(run: SyncRun) -> bool:
    return run.status == SyncStatus.FAILED.value and (run.error or "").startswith(LOST)


def has_resumable(session: Session, kind: str, workspace: str) -> bool:
    """Whether the latest run of this kind and workspace waits to be continued."""
    latest = _latest(session, kind, workspace)
    return latest is not None and (latest.status == SyncStatus.PAUSED.value or _was_lost(latest))


def resumable_run(session: Session, kind: str, workspace: str) -> SyncRun | None:
    """The run to continue: the latest of this kind and workspace when it is paused; a new
    run continuing it (same cursor, counts and start) when its worker was lost.

    Called under the (kind, workspace) lock when a watch is present, so a run still marked
    `running` has no live worker: it is marked lost here instead of waiting for beat."""
    latest = _latest(session, kind, workspace)
    if latest is None:
        return None
    if latest.status == SyncStatus.PAUSED.value:
        return latest
    if latest.status == SyncStatus.RUNNING.value and current_watch() is not None:
        mark_lost(latest, latest.heartbeat_at)
    if not _was_lost(latest):
        return None
    log.info(
        "sync run continues a run whose worker was lost",
        extra={"kind": kind, "workspace": workspace, "lost_run": latest.id},
    )
    return SyncRun(
        kind=kind,
        workspace=workspace,
        started_at=latest.started_at,
        counts=dict(latest.counts or {}),
        cursor=latest.cursor,
        calls_by_family={},
        api_calls=0,
    )


def mark_lost(run: SyncRun, last_seen: datetime | None) -> bool:
    """Record that `run`'s worker is gone, with what it spent; True when it is now parked."""
    lost = int((run.counts or {}).get("lost", 0)) + 1
    run.counts = {**(run.counts or {}), "lost": lost}
    run.finished_at = utcnow()
    seen = last_seen.isoformat(timespec="seconds") if last_seen else "its start"
    if lost >= LOST_LIMIT:
        run.status = SyncStatus.PARKED.value
        run.error = (
            f"parked: its worker was lost {lost} times (no heartbeat since {seen}; "
            f"{run.api_calls or 0} calls spent); not resumed until an operator syncs again"
        )
    else:
        run.status = SyncStatus.FAILED.value
        run.error = f"{LOST}: no heartbeat since {seen}; {run.api_calls or 0} calls spent"
    log.warning(
        "sync run lost its worker",
        extra={"run": run.id, "kind": run.kind, "workspace": run.workspace, "lost": lost},
    )
    return run.status == SyncStatus.PARKED.value


def lost_runs(session: Session, stale_seconds: int) -> list[SyncRun]:
    """Mark every running run silent for `stale_seconds` as lost; returns those to resume
    (the parked ones are left to an operator). The caller commits."""
    horizon = utcnow() - timedelta(seconds=stale_seconds)
    silent = session.scalars(
        select(SyncRun).where(
            SyncRun.status == SyncStatus.RUNNING.value,
            or_(
                SyncRun.heartbeat_at < horizon,
                SyncRun.heartbeat_at.is_(None) & (SyncRun.started_at < horizon),
            ),
        )
    ).all()
    return [run for run in silent if not mark_lost(run, run.heartbeat_at)]
