"""People: members, groups and permissions of each workspace, and of the Data Center source."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.sync.datacenter_people import DataCenterPeopleSync
from app.sync.people import PeopleSync, people_calls_left
from app.task_names import SYNC_ALL_MEMBERS, SYNC_MEMBERS
from workers.base import BbsyncTask


@shared_task(bind=True, base=BbsyncTask, name=SYNC_ALL_MEMBERS)
def sync_all_members(self: BbsyncTask) -> list[str]:
    """Beat's entry point (hourly): members, groups and permissions of each workspace, and
    users, groups and permissions of the Data Center server (its people workspace, `{host}`)."""
    workspaces = list(self.runtime.settings.workspaces)
    server = self.runtime.settings.datacenter
    if server is not None:
        workspaces.append(server.host)
    for workspace in workspaces:
        self.app.send_task(SYNC_MEMBERS, args=[workspace])
    return workspaces


@shared_task(bind=True, base=BbsyncTask, name=SYNC_MEMBERS)
def sync_members(self: BbsyncTask, workspace: str) -> dict[str, Any]:
    """Members → User entities, groups → Group entities, permissions within
    `BBSYNC_PEOPLE_SHARE` (the walk resumes next run); revocations audited. `workspace` is a
    Cloud workspace, or the Data Center server's host."""
    rt = self.runtime
    server = rt.settings.datacenter
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        if server is not None and workspace == server.host:
            run = DataCenterPeopleSync(
                rt.datacenter(), session, session.commit, rt.settings, server
            ).run()
        else:
            run = PeopleSync(
                rt.bitbucket(),
                session,
                session.commit,
                rt.settings,
                max_calls=people_calls_left(session, workspace, rt.settings),
            ).run(workspace)
        return {"run_id": run.id, "api_calls": run.api_calls, "error": run.error, **run.counts}
