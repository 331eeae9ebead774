"""The Data Center source's sync: every configured project, listing and catalog phase; and
the walk of one project a webhook asked for (a repository bbsync does not know yet)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.bitbucket.errors import NotFound
from app.sync.datacenter import DataCenterSync, workspace_key
from app.task_names import SYNC_DATACENTER, SYNC_DATACENTER_PROJECT
from workers.base import BbsyncTask
from workers.tasks.refresh import coalesced_send

WALK_KEY_PREFIX = "bbsync:datacenter-project-walk/"


@shared_task(bind=True, base=BbsyncTask, name=SYNC_DATACENTER)
def sync_datacenter(self: BbsyncTask, workspace: str = "") -> dict[str, Any]:
    """Every project of the Data Center source, both phases each; a retry after a budget
    pause resumes with the paused project. `workspace` (the host, or a project's
    `{host}/{KEY}` when a lost run is resumed) only labels the logs."""
    rt = self.runtime
    server = rt.datacenter_settings
    with self.retrying(workspace=workspace or server.host), self.unit_of_work() as session:
        result = DataCenterSync(
            rt.datacenter(), session, session.commit, rt.settings, server, redis_client=rt.redis
        ).run()
        return {
            "projects": {
                p.workspace: {"catalog": p.catalog.status, "api_calls": p.catalog.api_calls}
                for p in result.projects
            },
            "failed": result.failed,
            "warnings": result.warnings,
        }
    return {"skipped": "another sync holds it"}


def schedule_project_walk(task: BbsyncTask, project_key: str) -> str:
    """Coalesce the walks a burst of deliveries asks for, per project, as pushes' refreshes
    are: one at once, one trailing at the end of the window for all the others."""
    fingerprint = task.runtime.datacenter_settings.fingerprint
    key = project_key.upper()
    return coalesced_send(
        task,
        f"{WALK_KEY_PREFIX}{fingerprint}/{key}",
        max(task.runtime.settings.push_coalesce_seconds, 5.0),
        SYNC_DATACENTER_PROJECT,
        [key],
        [key],
        project=key,
    )


@shared_task(bind=True, base=BbsyncTask, name=SYNC_DATACENTER_PROJECT)
def sync_datacenter_project(self: BbsyncTask, project_key: str) -> dict[str, Any]:
    """One Data Center project, both phases (a webhook named a repository bbsync does not
    know): the listing stores it and the catalog phase reads its files."""
    rt = self.runtime
    server = rt.datacenter_settings
    workspace = workspace_key(server, project_key)
    with self.retrying(workspace=workspace), self.unit_of_work() as session:
        client = rt.datacenter()
        try:
            project = client.get_json(f"projects/{project_key}")
        except NotFound:
            return {"skipped": f"project {project_key} not found or not visible"}
        sync = DataCenterSync(client, session, session.commit, rt.settings, server)
        result = sync.run_project(project)
        return {
            "workspace": result.workspace,
            "catalog": result.catalog.status,
            "api_calls": result.catalog.api_calls,
        }
    return {"skipped": "another sync holds it"}
