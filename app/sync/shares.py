"""Budget shares of scheduled jobs: what one run of a job may spend of the `repositories`
window, and what its runs left of the share in the current window.

A job's share is a fraction of the hourly limit (`BBSYNC_ACTIVITY_SHARE`,
`BBSYNC_PEOPLE_SHARE`); a run gets the share divided by the runs a window holds, never more
than the share minus what the job's runs (`sync_runs` of its kind, retries after a budget pause
included) spent in the window, so neither queued runs nor retries take a job past its share.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import SyncRun, utcnow


def window_start(settings: Settings, interval_seconds: int) -> datetime:
    """Since when a job's runs count against its share in the current window.

    Runs that started in the window's first tenth of an interval are not counted: beat sends
    one run an interval, and the last window's run, queued a little longer than this one
    behind other work, must not leave this one nothing (halving the job's pace)."""
    slack = min(interval_seconds, settings.rate_window_seconds) / 10
    return utcnow() - timedelta(seconds=settings.rate_window_seconds - slack)


def share_per_window(settings: Settings, share: float) -> int:
    """Calls a job with `share` may spend in one rolling window."""
    return int(settings.rate_limit_per_hour * share)


def share_per_hour(settings: Settings, share: float) -> float:
    """Calls a job with `share` spends per real hour (windows may be compressed in benches)."""
    return settings.rate_limit_per_hour * share * 3600 / settings.rate_window_seconds


def run_call_cap(settings: Settings, share: float, interval_seconds: int, floor: int) -> int:
    """Calls one scheduled run may spend: its share of the window, per interval, at least
    `floor` (the smallest unit of work the job can do)."""
    runs_per_window = max(1.0, settings.rate_window_seconds / interval_seconds)
    return max(floor, int(share_per_window(settings, share) / runs_per_window))


def run_calls_left(
    session: Session,
    workspace: str,
    kind: str,
    settings: Settings,
    *,
    share: float,
    interval_seconds: int,
    floor: int,
) -> int:
    """The next run's cap, never above what the job's runs left of its share in the window."""
    since = window_start(settings, interval_seconds)
    spent = session.scalar(
        select(func.coalesce(func.sum(SyncRun.api_calls), 0)).where(
            SyncRun.kind == kind, SyncRun.workspace == workspace, SyncRun.started_at >= since
        )
    )
    left = share_per_window(settings, share) - int(spent or 0)
    return max(0, min(run_call_cap(settings, share, interval_seconds, floor), left))
