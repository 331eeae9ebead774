"""Activity: pull requests, pipelines and statuses reconciled per workspace, and retention."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.catalog.changes import prune_changes
from app.sync.activity import (
    ActivityReconcile,
    activity_calls_left,
    activity_quiet_calls_left,
    prune_old_activity,
)
from app.sync.datacenter_activity import (
    DataCenterActivityReconcile,
    datacenter_activity_calls_left,
)
from app.task_names import (
    PRUNE_ACTIVITY,
    RECONCILE_ACTIVITY,
    RECONCILE_ALL_ACTIVITY,
    RECONCILE_DATACENTER_ACTIVITY,
)
from workers.base import BbsyncTask


@shared_task(bind=True, base=BbsyncTask, name=RECONCILE_ALL_ACTIVITY)
def reconcile_all_activity(self: BbsyncTask) -> list[str]:
    """Beat's entry point: one activity reconciliation per configured Cloud workspace, and
    one for the Data Center source (every project of it, under one cap)."""
    settings = self.runtime.settings
    workspaces = list(settings.workspaces)
    for workspace in workspaces:
        self.app.send_task(RECONCILE_ACTIVITY, args=[workspace])
    if settings.datacenter is not None:
        self.app.send_task(RECONCILE_DATACENTER_ACTIVITY)
        workspaces.append(settings.datacenter.host)
    return workspaces


@shared_task(bind=True, base=BbsyncTask, name=RECONCILE_ACTIVITY)
def reconcile_activity(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Pull requests, pipelines and statuses webhooks may have missed; resumable."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        settings = self.runtime.settings
        run = ActivityReconcile(
            self.runtime.bitbucket(),
            session,
            session.commit,
            pipelines=settings.reconcile_pipelines,
            max_calls=activity_calls_left(session, workspace, settings),
            max_quiet_calls=activity_quiet_calls_left(session, workspace, settings),
        ).run(workspace)
        return {"run_id": run.id, "api_calls": run.api_calls, **run.counts}


@shared_task(bind=True, base=BbsyncTask, name=RECONCILE_DATACENTER_ACTIVITY)
def reconcile_datacenter_activity(self: BbsyncTask, workspace: str = "") -> dict[str, Any]:
    """Pull requests and build statuses of the Data Center source's repositories, changed
    ones first, within the activity share of its token bucket; resumable. `workspace` (the
    host, when a lost run is resumed) only labels the logs."""
    rt = self.runtime
    server = rt.datacenter_settings
    with self.retrying(workspace=server.host), self.unit_of_work() as session:
        run = DataCenterActivityReconcile(
            rt.datacenter(),
            session,
            session.commit,
            server,
            max_calls=datacenter_activity_calls_left(session, rt.settings, server),
        ).run_server()
        return {"run_id": run.id, "api_calls": run.api_calls, **run.counts}
    return {"skipped": "another activity run holds it"}


@shared_task(bind=True, base=BbsyncTask, name=PRUNE_ACTIVITY)
def prune_activity(self: BbsyncTask) -> dict[str, Any]:
    """Retention: pipelines and statuses older than `BBSYNC_RETENTION_DAYS` go, and catalog
    changes older than `BBSYNC_CHANGE_RETENTION_DAYS`."""
    settings = self.runtime.settings
    with self.unit_of_work() as session:
        pruned = prune_old_activity(session, settings.retention_days)
        return {**pruned, **prune_changes(session, settings.change_retention_days)}
