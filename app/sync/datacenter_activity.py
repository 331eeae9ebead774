"""Activity of a Bitbucket Data Center source: pull requests and build statuses.

Cloud's reconciliation (`app.sync.activity.ActivityReconcile`: the order that spends on
repositories with signs of change first, the call cap from the activity share, one commit per
repository, the same rows and the rule that a newer row is never overwritten by older data)
with Data Center's calls and payloads mapped to the shapes Cloud's store functions take:

- pull requests: `…/pull-requests?state=ALL` at 1,000 a page, every state. Data Center has no
  filter on the update time and its `order=NEWEST` is not documented to sort by it, so the
  whole list is read (one call for a repository under 1,000 pull requests) and only what is
  newer than the stored row is written;
- build statuses of the default branch's head (`…/commits/{hash}/builds`), the head the
  catalog phase keeps (one more call for its branch when it has none yet);
- no pipelines: Data Center has none (builds come from external CI as build statuses).

One run covers every project (bbsync workspace `{host}/{KEY}`) of the server under one cap:
the server's token bucket is one budget, so its projects share one activity share.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.bitbucket.datacenter import DataCenterClient
from app.config import Settings
from app.datacenter_settings import DataCenterSettings
from app.models import Project, PullRequest, Repository, SyncRun, Workspace, utcnow
from app.sync.activity import (
    KIND,
    ActivityReconcile,
    order_by_tier,
    reconcile_tiers,
    store_commit_status,
    store_pull_request,
)

log = logging.getLogger(__name__)

# A quiet repository costs a pull request page and a build status page.
CALLS_PER_REPOSITORY = 2
# Data Center's `/builds` states beside the legacy three; Cloud calls a cancelled build STOPPED.
BUILD_STATES = {
    "SUCCESSFUL": "SUCCESSFUL",
    "FAILED": "FAILED",
    "INPROGRESS": "INPROGRESS",
    "CANCELLED": "STOPPED",
    "UNKNOWN": "INPROGRESS",  # not finished as far as anyone knows: never a last build
}
# A Data Center reviewer's status in Cloud's participant `state`.
PARTICIPANT_STATES = {"APPROVED": "approved", "NEEDS_WORK": "changes_requested"}


def from_millis(value: int | None) -> datetime | None:
    """Data Center's epoch milliseconds as an aware UTC datetime."""
    return None if value is None else datetime.fromtimestamp(value / 1000, tz=UTC)


class _User(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True)  # the username: what Data Center identifies users by
    slug = fields.String(load_default=None, allow_none=True)
    displayName = fields.String(load_default=None, allow_none=True)


class _Participant(Schema):
    class Meta:
        unknown = EXCLUDE

    user = fields.Nested(_User, required=True)
    role = fields.String(load_default=None, allow_none=True)
    approved = fields.Boolean(load_default=None, allow_none=True)
    status = fields.String(load_default=None, allow_none=True)


class _Ref(Schema):
    class Meta:
        unknown = EXCLUDE

    displayId = fields.String(load_default=None, allow_none=True)
    latestCommit = fields.String(load_default=None, allow_none=True)


def _account(user: dict[str, Any]) -> dict[str, Any]:
    """A Data Center user in Cloud's account shape: the username stands for the account id."""
    return {
        "account_id": user["name"],
        "uuid": None,
        "display_name": user.get("displayName") or user["name"],
        "nickname": user.get("slug") or user["name"],
    }


def _participant(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": _account(value["user"]),
        "role": value.get("role"),
        "approved": value.get("approved"),
        "state": PARTICIPANT_STATES.get(value.get("status") or ""),
    }


class DataCenterPullRequestSchema(Schema):
    """A Data Center pull request, loaded into the shape `store_pull_request` takes."""

    class Meta:
        unknown = EXCLUDE

    id = fields.Integer(required=True, validate=validate.Range(min=1))
    title = fields.String(load_default="")
    state = fields.String(required=True, validate=validate.OneOf(["OPEN", "MERGED", "DECLINED"]))
    author = fields.Nested(_Participant, load_default=None, allow_none=True)
    fromRef = fields.Nested(_Ref, load_default=None, allow_none=True)
    toRef = fields.Nested(_Ref, load_default=None, allow_none=True)
    createdDate = fields.Integer(required=True)
    updatedDate = fields.Integer(required=True)
    reviewers = fields.List(fields.Nested(_Participant), load_default=None, allow_none=True)
    participants = fields.List(fields.Nested(_Participant), load_default=None, allow_none=True)
    properties = fields.Dict(load_default=None, allow_none=True)
    # `links.self[0].href` is not kept: as for Cloud, no pull request URL is stored (the
    # entity page links to the repository, whose URL the catalog carries).

    @post_load
    def to_row(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        def endpoint(ref: dict[str, Any] | None) -> dict[str, Any]:
            ref = ref or {}
            return {
                "branch": {"name": ref.get("displayId")},
                "commit": {"hash": ref.get("latestCommit")},
            }

        props = data.get("properties") or {}
        merge = props.get("mergeCommit")
        reviewers = data.get("reviewers")
        participants = data.get("participants")
        return {
            "id": data["id"],
            "title": data["title"],
            "state": data["state"],
            "author": _account(data["author"]["user"]) if data.get("author") else None,
            "source": endpoint(data.get("fromRef")),
            "destination": endpoint(data.get("toRef")),
            "merge_commit": {"hash": merge.get("id")} if isinstance(merge, dict) else None,
            "comment_count": _int(props.get("commentCount")),
            "task_count": _int(props.get("openTaskCount")),
            # Unlike Cloud's lists, Data Center's carry reviewers and participants.
            "reviewers": [_account(r["user"]) for r in reviewers or []],
            "participants": [_participant(p) for p in [*(reviewers or []), *(participants or [])]],
            "created_on": from_millis(data["createdDate"]),
            "updated_on": from_millis(data["updatedDate"]),
        }


class DataCenterBuildStatusSchema(Schema):
    """A build status (`/builds` or legacy `/rest/build-status`), loaded into the shape
    `store_commit_status` takes but the commit (the one the statuses were asked for)."""

    class Meta:
        unknown = EXCLUDE

    key = fields.String(required=True, validate=validate.Length(min=1, max=255))
    state = fields.String(required=True, validate=validate.OneOf(list(BUILD_STATES)))
    name = fields.String(load_default=None, allow_none=True)
    url = fields.String(load_default=None, allow_none=True)
    description = fields.String(load_default=None, allow_none=True)
    ref = fields.String(load_default=None, allow_none=True)
    dateAdded = fields.Integer(load_default=None, allow_none=True)  # legacy endpoint
    createdDate = fields.Integer(load_default=None, allow_none=True)
    updatedDate = fields.Integer(load_default=None, allow_none=True)

    @post_load
    def to_row(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        updated = data.get("updatedDate") or data.get("dateAdded")
        ref = data.get("ref") or ""
        return {
            "key": data["key"],
            "state": BUILD_STATES[data["state"]],
            "name": data.get("name"),
            "url": data.get("url"),
            "description": data.get("description"),
            "refname": ref.removeprefix("refs/heads/") or None,
            "created_on": from_millis(data.get("createdDate") or updated),
            "updated_on": from_millis(updated),
        }


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_pull_request_schema = DataCenterPullRequestSchema()
_build_status_schema = DataCenterBuildStatusSchema()


def server_workspaces(session: Session, server: DataCenterSettings) -> list[str]:
    """The bbsync workspaces (`{host}/{KEY}`) of the server's synced projects."""
    prefix = f"{server.host}/"
    return [
        slug
        for slug in session.scalars(select(Workspace.slug).order_by(Workspace.slug))
        if slug.startswith(prefix)
    ]


class DataCenterActivityReconcile(ActivityReconcile):
    """Every project of one Data Center server in one run, changed repositories first."""

    def __init__(
        self,
        client: DataCenterClient,
        session: Session,
        commit: Callable[[], None],
        server: DataCenterSettings,
        *,
        max_calls: int | None = None,
    ) -> None:
        super().__init__(client.calls, session, commit, pipelines=False, max_calls=max_calls)
        self.dc = client
        self.server = server

    @property
    def calls_per_repository(self) -> int:
        return CALLS_PER_REPOSITORY

    def order(self, workspace: str) -> list[tuple[Repository, bool]]:
        """Across the server's projects: one budget, so one order."""
        tiers = [
            t
            for ws in server_workspaces(self.session, self.server)
            for t in reconcile_tiers(self.session, ws)
        ]
        return order_by_tier(tiers)

    def run_server(self) -> SyncRun:
        """One run over the server, recorded under its host."""
        return self.run(self.server.host)

    def _project_key(self, repo: Repository) -> str:
        project = self.session.get(Project, repo.project_id) if repo.project_id else None
        assert project is not None, "every Data Center repository belongs to a project"
        return project.key

    def _pull_requests(self, workspace: str, repo: Repository) -> None:
        stored = {
            number: updated
            for number, updated in self.session.execute(
                select(PullRequest.number, PullRequest.updated_on).where(
                    PullRequest.repository_id == repo.id
                )
            )
        }
        newest = repo.pull_requests_cursor
        for item in self.dc.pull_requests(self._project_key(repo), repo.slug, "ALL"):
            try:
                pr = _pull_request_schema.load(item)
            except ValidationError:
                self.counts["failures"] += 1
                continue
            known = _aware(stored.get(pr["id"]))
            if known is not None and pr["updated_on"] <= known:
                if pr["updated_on"] < known:
                    self.counts["stale"] += 1
                continue  # the whole list is read each time: write only what moved
            if store_pull_request(self.session, repo, pr):
                self.counts["pull_requests"] += 1
            if newest is None or pr["updated_on"] > _aware(newest):
                newest = pr["updated_on"]
        repo.pull_requests_cursor = newest

    def _statuses(self, workspace: str, repo: Repository) -> None:
        key = self._project_key(repo)
        head = repo.head_commit
        if head is None and repo.default_branch:
            branch = self.dc.default_branch(key, repo.slug)
            head = str((branch or {}).get("latestCommit") or "") or None
            repo.head_commit = head
        if head is None:
            return
        for item in self.dc.build_statuses(key, repo.slug, head):
            try:
                status = {**_build_status_schema.load(item), "commit": {"hash": head}}
                if store_commit_status(self.session, repo, status):
                    self.counts["statuses"] += 1
            except ValidationError:
                self.counts["failures"] += 1


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they are UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def datacenter_activity_cap(settings: Settings, server: DataCenterSettings) -> int:
    """Calls one scheduled run may spend: the activity share of the token bucket's steady
    rate over one interval."""
    per_run = server.rate_per_second * settings.activity_interval_seconds * settings.activity_share
    return max(CALLS_PER_REPOSITORY, int(per_run))


def datacenter_activity_calls_left(
    session: Session, settings: Settings, server: DataCenterSettings
) -> int:
    """The next run's cap, never above what the server's activity runs left of the share
    over the last hour (retries after a pause, runs queued behind a busy worker)."""
    since = utcnow() - timedelta(hours=1)
    spent = session.scalar(
        select(func.coalesce(func.sum(SyncRun.api_calls), 0)).where(
            SyncRun.kind == KIND, SyncRun.workspace == server.host, SyncRun.started_at >= since
        )
    )
    share = int(server.rate_per_second * 3600 * settings.activity_share)
    return max(0, min(datacenter_activity_cap(settings, server), share - int(spent or 0)))
