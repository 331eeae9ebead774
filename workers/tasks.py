"""Thin tasks: each opens a unit of work and calls one service in `app.sync`."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.sync.repositories import RepositorySync
from app.tasks import SYNC_ALL_WORKSPACES, SYNC_REPOSITORIES
from workers.base import BbsyncTask


@shared_task(bind=True, base=BbsyncTask, name=SYNC_ALL_WORKSPACES)
def sync_all_workspaces(self: BbsyncTask) -> list[str]:
    """Beat's entry point: one repository sync per configured workspace."""
    workspaces = list(self.runtime.settings.workspaces)
    for workspace in workspaces:
        self.app.send_task(SYNC_REPOSITORIES, args=[workspace])
    return workspaces


@shared_task(bind=True, base=BbsyncTask, name=SYNC_REPOSITORIES)
def sync_repositories(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Mirror one workspace's repositories; resumes a run paused for budget."""
    with self.retrying(), self.unit_of_work() as session:
        sync = RepositorySync(self.runtime.bitbucket(), session, commit=session.commit)
        run = sync.run(workspace)
        return {"run_id": run.id, "status": run.status, "api_calls": run.api_calls, **run.counts}
