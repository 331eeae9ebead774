"""Thin tasks: each opens a unit of work and calls one service in `app.sync`."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.sync.repositories import RepositorySync
from app.sync.workspace import WorkspaceSync
from app.tasks import SYNC_ALL_WORKSPACES, SYNC_REPOSITORIES, SYNC_WORKSPACE
from workers.base import BbsyncTask


@shared_task(bind=True, base=BbsyncTask, name=SYNC_ALL_WORKSPACES)
def sync_all_workspaces(self: BbsyncTask) -> list[str]:
    """Beat's entry point: one full sync per configured workspace."""
    workspaces = list(self.runtime.settings.workspaces)
    for workspace in workspaces:
        self.app.send_task(SYNC_WORKSPACE, args=[workspace])
    return workspaces


@shared_task(bind=True, base=BbsyncTask, name=SYNC_WORKSPACE)
def sync_workspace(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """List one workspace's repositories, then read the catalog files that changed."""
    with self.retrying(), self.unit_of_work() as session:
        result = WorkspaceSync(
            self.runtime.bitbucket(), session, session.commit, self.runtime.settings
        ).run(workspace)
        return {
            "repositories": {"run_id": result.repositories.id, **result.repositories.counts},
            "catalog": {"run_id": result.catalog.id, **result.catalog.counts},
            "api_calls": result.repositories.api_calls + result.catalog.api_calls,
        }


@shared_task(bind=True, base=BbsyncTask, name=SYNC_REPOSITORIES)
def sync_repositories(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Mirror one workspace's repositories; resumes a run paused for budget."""
    with self.retrying(), self.unit_of_work() as session:
        sync = RepositorySync(self.runtime.bitbucket(), session, commit=session.commit)
        run = sync.run(workspace)
        return {"run_id": run.id, "status": run.status, "api_calls": run.api_calls, **run.counts}
