"""Full syncs: beat's fan-out per workspace, one workspace's listing and catalog phase, a
listing alone, and the watchdog that resumes a sync whose worker was lost."""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk
from celery import shared_task

from app.ops.credentials_age import token_age_notice
from app.sync.datacenter import is_datacenter_workspace
from app.sync.refresh_failures import clear_workspace_refresh_failures
from app.sync.repositories import RepositorySync
from app.sync.runs import lost_runs
from app.sync.workspace import WorkspaceSync
from app.task_names import (
    RECONCILE_ACTIVITY,
    RECONCILE_DATACENTER_ACTIVITY,
    RECOVER_LOST_RUNS,
    SYNC_ALL_WORKSPACES,
    SYNC_DATACENTER,
    SYNC_MEMBERS,
    SYNC_REPOSITORIES,
    SYNC_WORKSPACE,
)
from workers.base import BbsyncTask

log = logging.getLogger(__name__)


@shared_task(bind=True, base=BbsyncTask, name=SYNC_ALL_WORKSPACES)
def sync_all_workspaces(self: BbsyncTask) -> list[str]:
    """Beat's entry point: one full sync per configured workspace."""
    notice = token_age_notice(self.runtime.settings)
    if notice:
        log.warning(notice[1], extra={"alert": f"token_{notice[0]}"})
        sentry_sdk.capture_message(notice[1], level="error" if notice[0] == "alert" else "warning")
    workspaces = list(self.runtime.settings.workspaces)
    for workspace in workspaces:
        self.app.send_task(SYNC_WORKSPACE, args=[workspace])
    server = self.runtime.settings.datacenter
    if server is not None:
        self.app.send_task(SYNC_DATACENTER, args=[server.host])
        workspaces.append(server.host)
    return workspaces


@shared_task(bind=True, base=BbsyncTask, name=SYNC_WORKSPACE)
def sync_workspace(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """List one workspace's repositories, then read the catalog files that changed."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        result = WorkspaceSync(
            self.runtime.bitbucket(), session, session.commit, self.runtime.settings
        ).run(workspace)
        if result.catalog.status == "succeeded" and not result.catalog.counts.get("failures"):
            clear_workspace_refresh_failures(session, workspace)
        listing = result.repositories
        return {
            "repositories": {"run_id": listing.id, **listing.counts} if listing else None,
            "catalog": {"run_id": result.catalog.id, **result.catalog.counts},
            "api_calls": (listing.api_calls if listing else 0) + result.catalog.api_calls,
        }


@shared_task(bind=True, base=BbsyncTask, name=SYNC_REPOSITORIES)
def sync_repositories(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Mirror one workspace's repositories; resumes a run paused for budget."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        sync = RepositorySync(self.runtime.bitbucket(), session, commit=session.commit)
        run = sync.run(workspace)
        return {"run_id": run.id, "status": run.status, "api_calls": run.api_calls, **run.counts}


# The task that continues a lost run of each kind (it resumes from the run's cursor).
RESUME_TASKS = {
    "repositories": SYNC_WORKSPACE,
    "catalog": SYNC_WORKSPACE,
    "members": SYNC_MEMBERS,
    "activity": RECONCILE_ACTIVITY,
}


def _resume_task(kind: str, workspace: str, datacenter_host: str | None = None) -> str:
    if is_datacenter_workspace(workspace) and kind in ("repositories", "catalog"):
        return SYNC_DATACENTER
    # The Data Center source's activity run is recorded under its host.
    if kind == "activity" and datacenter_host is not None and workspace == datacenter_host:
        return RECONCILE_DATACENTER_ACTIVITY
    return RESUME_TASKS[kind]


@shared_task(bind=True, base=BbsyncTask, name=RECOVER_LOST_RUNS)
def recover_lost_runs(self: BbsyncTask) -> list[str]:
    """Beat's watchdog: a running sync whose heartbeat went stale lost its worker (killed
    with the message still unacked, which the broker would hold for hours). Mark it lost with
    what it spent and enqueue the task that continues it, now."""
    with self.unit_of_work() as session:
        settings = self.runtime.settings
        lost = lost_runs(session, settings.run_stale_seconds)
        host = settings.datacenter.host if settings.datacenter else None
        resume = dict.fromkeys(
            (_resume_task(r.kind, r.workspace, host), r.workspace)
            for r in lost
            if r.kind in RESUME_TASKS
        )
    for task, workspace in resume:
        log.warning("lost sync resumed", extra={"task": task, "workspace": workspace})
        self.app.send_task(task, args=[workspace])
    return [f"{task} {workspace}" for task, workspace in resume]
