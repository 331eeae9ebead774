"""People: members, groups and permissions of each workspace."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.sync.people import PeopleSync
from app.task_names import SYNC_ALL_MEMBERS, SYNC_MEMBERS
from workers.base import BbsyncTask


@shared_task(bind=True, base=BbsyncTask, name=SYNC_ALL_MEMBERS)
def sync_all_members(self: BbsyncTask) -> list[str]:
    """Beat's entry point (hourly): members, groups and permissions of each workspace."""
    workspaces = list(self.runtime.settings.workspaces)
    for workspace in workspaces:
        self.app.send_task(SYNC_MEMBERS, args=[workspace])
    return workspaces


@shared_task(bind=True, base=BbsyncTask, name=SYNC_MEMBERS)
def sync_members(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Members → User entities, groups → Group entities, permissions; revocations audited."""
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        run = PeopleSync(
            self.runtime.bitbucket(), session, session.commit, self.runtime.settings
        ).run(workspace)
        return {"run_id": run.id, "api_calls": run.api_calls, "error": run.error, **run.counts}
