"""Repository activity: pull requests, pipelines and build statuses.

Webhooks keep it fresh (`app.sync.events` stores what they carry with the functions here);
`ActivityReconcile` mends what webhooks missed: per repository, pull requests updated since
its cursor (all four states, 50 a page, BBQL on `updated_on`; the cursor moves only after a
complete walk), the most recent pipelines, and the statuses of the default branch head.
A newer row is never overwritten by older data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.errors import BitbucketRequestError
from app.bitbucket.schemas import CommitStatusSchema, PipelineSchema, PullRequestSchema
from app.config import Settings
from app.models import (
    CommitStatus,
    Pipeline,
    PullRequest,
    Repository,
    SyncRun,
    WebhookDelivery,
    Workspace,
    utcnow,
)
from app.sync.runs import recorded_run
from app.sync.shares import (
    run_call_cap,
    run_calls_left,
    share_per_hour,
    share_per_window,
    window_start,
)

log = logging.getLogger(__name__)

KIND = "activity"
PR_STATES = ("OPEN", "MERGED", "DECLINED", "SUPERSEDED")
RECENT_PIPELINES = 20
# A quiet repository costs a pull request page, a pipeline page and a status page.
CALLS_PER_REPOSITORY = 3

_pull_request_schema = PullRequestSchema()
_status_schema = CommitStatusSchema()
_pipeline_schema = PipelineSchema()


def _older(incoming: datetime | None, stored: datetime | None) -> bool:
    return incoming is not None and stored is not None and incoming < stored


def _account(value: dict[str, Any]) -> dict[str, Any]:
    return {k: value.get(k) for k in ("account_id", "uuid", "display_name", "nickname")}


def _participant(value: dict[str, Any]) -> dict[str, Any]:
    user = value.get("user") or {}
    return {
        **_account(user),
        "role": value.get("role"),
        "approved": value.get("approved"),
        "state": value.get("state"),
    }


def store_pull_request(session: Session, repo: Repository, pr: dict[str, Any]) -> bool:
    """Upsert a pull request (as loaded by `PullRequestSchema`); False when `pr` is older
    than what is stored (an out-of-order delivery)."""
    existing = session.scalars(
        select(PullRequest).where(
            PullRequest.repository_id == repo.id, PullRequest.number == pr["id"]
        )
    ).first()
    if existing is not None and _older(pr["updated_on"], existing.updated_on):
        return False
    author = pr.get("author") or {}
    source, destination = pr.get("source") or {}, pr.get("destination") or {}
    row = existing or PullRequest(repository_id=repo.id, number=pr["id"])
    row.title = pr.get("title") or ""
    row.state = pr["state"]
    row.author_account_id = author.get("account_id")
    row.author_display_name = author.get("display_name")
    row.source_branch = (source.get("branch") or {}).get("name")
    row.destination_branch = (destination.get("branch") or {}).get("name")
    row.source_commit = (source.get("commit") or {}).get("hash")
    row.destination_commit = (destination.get("commit") or {}).get("hash")
    row.merge_commit = (pr.get("merge_commit") or {}).get("hash")
    if pr.get("comment_count") is not None:
        row.comment_count = pr["comment_count"]
    if pr.get("task_count") is not None:
        row.task_count = pr["task_count"]
    if pr.get("reviewers") is not None or pr.get("participants") is not None:
        # Lists carry no reviewers: only a webhook (or the single-PR endpoint) sets them.
        row.reviewers = {
            "reviewers": [_account(r) for r in pr.get("reviewers") or []],
            "participants": [_participant(p) for p in pr.get("participants") or []],
        }
    row.created_on = pr["created_on"]
    row.updated_on = pr["updated_on"]
    row.closed_on = pr["updated_on"] if pr["state"] != "OPEN" else None
    session.add(row)
    return True


def store_commit_status(session: Session, repo: Repository, status: dict[str, Any]) -> bool:
    """Upsert a build status keyed on commit and key; False when older than the stored one."""
    commit = status["commit"]["hash"]
    existing = session.scalars(
        select(CommitStatus).where(
            CommitStatus.repository_id == repo.id,
            CommitStatus.commit_hash == commit,
            CommitStatus.key == status["key"],
        )
    ).first()
    if existing is not None and _older(status.get("updated_on"), existing.updated_on):
        return False
    row = existing or CommitStatus(repository_id=repo.id, commit_hash=commit, key=status["key"])
    row.state = status["state"]
    row.name = status.get("name")
    row.description = status.get("description")
    row.refname = status.get("refname")
    row.url = status.get("url")  # the CI system's page: stored, never fetched
    row.created_on = status.get("created_on")
    row.updated_on = status.get("updated_on")
    session.add(row)
    return True


def store_pipeline(session: Session, repo: Repository, data: dict[str, Any]) -> None:
    """Upsert a pipeline (as loaded by `PipelineSchema`), keyed on its UUID."""
    row = session.scalars(select(Pipeline).where(Pipeline.uuid == data["uuid"])).first()
    row = row or Pipeline(uuid=data["uuid"], repository_id=repo.id)
    target = data.get("target") or {}
    result = (data["state"].get("result") or {}).get("name")
    row.build_number = data.get("build_number")
    row.state = data["state"]["name"]
    row.result = result
    row.trigger = (data.get("trigger") or {}).get("name")
    row.ref_type = target.get("ref_type")
    row.ref_name = target.get("ref_name")
    row.commit_hash = (target.get("commit") or {}).get("hash")
    row.duration_seconds = data.get("duration_in_seconds")
    row.created_on = data.get("created_on")
    row.completed_on = data.get("completed_on")
    session.add(row)


class ActivityReconcile:
    """Reconciles repositories in the order `reconcile_order` gives, within `max_calls`."""

    def __init__(
        self,
        client: BitbucketClient,
        session: Session,
        commit: Callable[[], None],
        *,
        pipelines: bool = True,
        max_calls: int | None = None,
        max_quiet_calls: int | None = None,
    ) -> None:
        self.client = client
        self.session = session
        self.commit = commit
        self.pipelines = pipelines
        self.max_calls = max_calls
        # What repositories without signs of change (the quiet sweep, a cold backlog) may
        # spend of `max_calls`: changed ones may spend all of it.
        self.max_quiet_calls = max_quiet_calls
        self.counts: dict[str, int] = {}

    @property
    def calls_per_repository(self) -> int:
        """What a quiet repository costs: the least a run must have left to start one."""
        return CALLS_PER_REPOSITORY if self.pipelines else CALLS_PER_REPOSITORY - 1

    def order(self, workspace: str) -> list[tuple[Repository, bool]]:
        """The repositories this run goes through, changed first (`reconcile_order`)."""
        return reconcile_order(self.session, workspace)

    def run(self, workspace: str) -> SyncRun:
        """Reconcile repositories with signs of change first, then the quiet ones oldest first,
        stopping before a repository would take the run past `max_calls` (its share of the
        budget); each repository is committed on its own, so the next run goes on from there."""
        self.counts = dict.fromkeys(
            (
                "repositories",
                "changed",
                "pull_requests",
                "stale",
                "pipelines",
                "statuses",
                "failures",
                "deferred",
                "quiet_calls",
            ),
            0,
        )
        run = SyncRun(kind=KIND, workspace=workspace)
        with recorded_run(self.session, self.commit, self.client, run, lambda: self.counts):
            started = self.client.ledger.total
            cost = self.calls_per_repository
            ordered = self.order(workspace)
            for index, (repo, changed) in enumerate(ordered):
                spent = self.client.ledger.total - started
                quiet = self.counts["quiet_calls"]
                if (self.max_calls is not None and spent + cost > self.max_calls) or (
                    not changed
                    and self.max_quiet_calls is not None
                    and quiet + cost > self.max_quiet_calls
                ):
                    # Changed repositories come first: whatever is left waits for a later run.
                    self.counts["deferred"] = len(ordered) - index
                    break
                before = self.client.ledger.total
                self.reconcile_repository(workspace, repo)
                self.counts["changed"] += changed
                if not changed:
                    self.counts["quiet_calls"] += self.client.ledger.total - before
                self.commit()
        return run

    def reconcile_repository(self, workspace: str, repo: Repository) -> None:
        try:
            self._pull_requests(workspace, repo)
            if self.pipelines:
                self._pipelines(workspace, repo)
            self._statuses(workspace, repo)
        except BitbucketRequestError as exc:
            # One repository's 403/404 must not stop the others; it is tried again next run.
            self.counts["failures"] += 1
            log.warning(
                "activity not reconciled", extra={"repository": repo.full_name, "error": str(exc)}
            )
            return
        repo.activity_reconciled_at = utcnow()
        self.counts["repositories"] += 1

    def _pull_requests(self, workspace: str, repo: Repository) -> None:
        params: list[tuple[str, Any]] = [("state", s) for s in PR_STATES]
        params.append(("sort", "updated_on"))
        if repo.pull_requests_cursor is not None:
            params.append(("q", f'updated_on > "{repo.pull_requests_cursor.isoformat()}"'))
        newest = repo.pull_requests_cursor
        for item in self.client.paginate(
            api_path("repositories", workspace, repo.slug, "pullrequests"), params, pagelen=50
        ):
            try:
                pr = _pull_request_schema.load(item)
            except ValidationError:
                self.counts["failures"] += 1
                continue
            if store_pull_request(self.session, repo, pr):
                self.counts["pull_requests"] += 1
            else:
                self.counts["stale"] += 1
            if newest is None or pr["updated_on"] > newest:
                newest = pr["updated_on"]
        repo.pull_requests_cursor = newest  # only after every page was read

    def _pipelines(self, workspace: str, repo: Repository) -> None:
        page = next(
            self.client.iter_pages(
                api_path("repositories", workspace, repo.slug, "pipelines") + "/",
                {"sort": "-created_on"},
                pagelen=RECENT_PIPELINES,
            ),
            None,
        )
        for item in page.values if page else []:
            try:
                store_pipeline(self.session, repo, _pipeline_schema.load(item))
                self.counts["pipelines"] += 1
            except ValidationError:
                self.counts["failures"] += 1

    def _statuses(self, workspace: str, repo: Repository) -> None:
        head = repo.head_commit
        if head is None and repo.default_branch:
            body = self.client.get_json(
                api_path(
                    "repositories", workspace, repo.slug, "refs", "branches", repo.default_branch
                )
            )
            head = str((body.get("target") or {}).get("hash") or "") or None
            repo.head_commit = head
        if head is None:
            return
        for item in self.client.paginate(
            api_path("repositories", workspace, repo.slug, "commit", head, "statuses")
        ):
            try:
                if store_commit_status(self.session, repo, _status_schema.load(item)):
                    self.counts["statuses"] += 1
            except ValidationError:
                self.counts["failures"] += 1


def reconcile_order(session: Session, workspace: str) -> list[tuple[Repository, bool]]:
    """Live repositories in the order activity reconciliation spends on them, each with
    whether it shows signs of change (see `reconcile_tiers`)."""
    return order_by_tier(reconcile_tiers(session, workspace))


def order_by_tier(tiers: list[tuple[Repository, int]]) -> list[tuple[Repository, bool]]:
    """Repositories by tier, oldest reconciliation first within each, with whether changed;
    `tiers` may come from several workspaces (a Data Center server's projects)."""
    epoch = datetime.min.replace(tzinfo=UTC)
    ordered = sorted(tiers, key=lambda t: (t[1], t[0].activity_reconciled_at or epoch))
    return [(repo, tier == 0) for repo, tier in ordered]


def reconcile_tiers(session: Session, workspace: str) -> list[tuple[Repository, int]]:
    """Live repositories of a workspace, each with its tier (0 is spent on first).

    First those with signs of change since their last reconciliation: the hourly listing moved
    `updated_on`, or deliveries arrived for them (after an ingress outage these are the ones
    Bitbucket changed meanwhile). Then those never reconciled, then those with open pull
    requests (reviews and approvals do not move `updated_on`), then the quiet rest; oldest
    reconciliation first within each tier.
    """
    ws = session.scalars(select(Workspace).where(Workspace.slug == workspace)).first()
    if ws is None:
        return []
    repos = list(
        session.scalars(
            select(Repository).where(
                Repository.workspace_id == ws.id, Repository.deleted_at.is_(None)
            )
        )
    )
    reconciled = [r.activity_reconciled_at for r in repos if r.activity_reconciled_at]
    delivered: dict[str, datetime] = {}
    if reconciled:
        delivered = {
            name: at
            for name, at in session.execute(
                select(WebhookDelivery.repository_full_name, func.max(WebhookDelivery.received_at))
                .where(WebhookDelivery.received_at > min(reconciled))
                .group_by(WebhookDelivery.repository_full_name)
            )
            if name
        }
    with_open = set(
        session.scalars(
            select(PullRequest.repository_id)
            .join(Repository, PullRequest.repository_id == Repository.id)
            .where(Repository.workspace_id == ws.id, PullRequest.state == "OPEN")
            .distinct()
        )
    )

    def tier(repo: Repository) -> int:
        last = repo.activity_reconciled_at
        if last is None:
            # After the changed ones: a cold backlog (a first sweep of 10,000 repositories
            # takes days at the share) must not hold a change back.
            return 1
        if repo.updated_on is not None and repo.updated_on > last:
            return 0
        seen = delivered.get(repo.full_name)
        if seen is not None and seen > last:
            return 0
        return 2 if repo.id in with_open else 3

    return [(repo, tier(repo)) for repo in repos]


def activity_call_cap(settings: Settings) -> int:
    """Calls one scheduled reconciliation may spend: its share of the window, per interval."""
    return run_call_cap(
        settings, settings.activity_share, settings.activity_interval_seconds, CALLS_PER_REPOSITORY
    )


def activity_calls_left(session: Session, workspace: str, settings: Settings) -> int:
    """The next scheduled run's cap, never above what activity runs (retries after a budget
    pause, beat's runs queued behind a busy worker) left of the share in the current window."""
    return run_calls_left(
        session,
        workspace,
        KIND,
        settings,
        share=settings.activity_share,
        interval_seconds=settings.activity_interval_seconds,
        floor=CALLS_PER_REPOSITORY,
    )


def sweep_share(settings: Settings) -> float:
    """The quiet sweep's share: `BBSYNC_ACTIVITY_SWEEP_SHARE`, never above the activity share."""
    return min(settings.activity_sweep_share, settings.activity_share)


def activity_quiet_calls_left(session: Session, workspace: str, settings: Settings) -> int:
    """What the next scheduled run may spend on repositories without signs of change: the
    sweep share per run, never above what activity runs spent on them in the window."""
    since = window_start(settings, settings.activity_interval_seconds)
    spent = sum(
        int((counts or {}).get("quiet_calls") or 0)
        for counts in session.scalars(
            select(SyncRun.counts).where(
                SyncRun.kind == KIND, SyncRun.workspace == workspace, SyncRun.started_at >= since
            )
        )
    )
    share = sweep_share(settings)
    cap = run_call_cap(settings, share, settings.activity_interval_seconds, CALLS_PER_REPOSITORY)
    return max(0, min(cap, share_per_window(settings, share) - spent))


@dataclass(frozen=True)
class ActivityCoverage:
    repositories: int
    never_reconciled: int
    oldest: datetime | None
    sweep_hours: float  # a full pass over every repository at the current share


def activity_coverage(session: Session, workspace: str, settings: Settings) -> ActivityCoverage:
    """How far behind activity reconciliation is, and how long a full sweep takes."""
    ws = session.scalars(select(Workspace).where(Workspace.slug == workspace)).first()
    live = (Repository.workspace_id == (ws.id if ws else -1), Repository.deleted_at.is_(None))
    total, never, oldest = session.execute(
        select(
            func.count(),
            func.count().filter(Repository.activity_reconciled_at.is_(None)),
            func.min(Repository.activity_reconciled_at),
        ).where(*live)
    ).one()
    per_hour = share_per_hour(settings, sweep_share(settings))
    sweep = total * CALLS_PER_REPOSITORY / per_hour if per_hour else float("inf")
    return ActivityCoverage(int(total), int(never), oldest, sweep)


def prune_old_activity(session: Session, retention_days: int) -> dict[str, int]:
    """Delete pipelines and commit statuses older than the retention; the caller commits.

    The most recently stored status per repository and key is kept whatever its age, so a quiet
    repository's last build result survives.
    """
    cutoff = utcnow() - timedelta(days=retention_days)
    pipelines = session.execute(
        delete(Pipeline).where(func.coalesce(Pipeline.completed_on, Pipeline.created_on) < cutoff)
    )
    newest = (
        select(func.max(CommitStatus.id))
        .group_by(CommitStatus.repository_id, CommitStatus.key)
        .scalar_subquery()
    )
    statuses = session.execute(
        delete(CommitStatus).where(CommitStatus.updated_on < cutoff, CommitStatus.id.not_in(newest))
    )
    return {
        "pipelines": int(getattr(pipelines, "rowcount", 0) or 0),
        "statuses": int(getattr(statuses, "rowcount", 0) or 0),
    }
