"""The Data Center source's sync: every configured project, listing and catalog phase."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.sync.datacenter import DataCenterSync
from app.task_names import SYNC_DATACENTER
from workers.base import BbsyncTask


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
