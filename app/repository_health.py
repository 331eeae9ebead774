"""Repository health, derived from stored rows only: never a Bitbucket call at read time.

Read as columns, not ORM objects: a lookup is three statements built once (the repository
with its open pull-request count, the recent pipelines, the statuses that matter), whose
compiled forms SQLAlchemy caches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Row, bindparam, func, select
from sqlalchemy.orm import Session

from app.models import CommitStatus, Pipeline, PullRequest, Repository, Workspace, utcnow


class HealthRepository(Protocol):
    """What a health summary reads of a repository (a `Repository` or a `health_repository`
    row)."""

    @property
    def id(self) -> int: ...
    @property
    def full_name(self) -> str: ...
    @property
    def default_branch(self) -> str | None: ...
    @property
    def head_commit(self) -> str | None: ...
    @property
    def last_push_at(self) -> datetime | None: ...
    @property
    def updated_on(self) -> datetime | None: ...


def _open_pull_requests(aggregate: Any) -> Any:
    return (
        select(aggregate)
        .where(PullRequest.repository_id == Repository.id, PullRequest.state == "OPEN")
        .scalar_subquery()
    )


# The repository by workspace and slug, with its open pull requests counted, in one statement.
_REPOSITORY = (
    select(
        Repository.id,
        Repository.full_name,
        Repository.default_branch,
        Repository.head_commit,
        Repository.last_push_at,
        Repository.updated_on,
        _open_pull_requests(func.count()).label("open_count"),
        _open_pull_requests(func.min(PullRequest.created_on)).label("oldest_open"),
    )
    .join(Workspace, Repository.workspace_id == Workspace.id)
    .where(
        Workspace.slug == bindparam("workspace"),
        Repository.slug == bindparam("slug"),
        Repository.deleted_at.is_(None),
    )
    .limit(1)
)
_OPEN = select(func.count(), func.min(PullRequest.created_on)).where(
    PullRequest.repository_id == bindparam("repository_id"), PullRequest.state == "OPEN"
)
_PIPELINES = (
    select(
        Pipeline.result,
        Pipeline.ref_name,
        Pipeline.build_number,
        Pipeline.commit_hash,
        Pipeline.completed_on,
    )
    .where(Pipeline.repository_id == bindparam("repository_id"), Pipeline.state == "COMPLETED")
    .order_by(Pipeline.created_on.desc())
    .limit(bindparam("runs"))
)
_STATUSES = (
    select(
        CommitStatus.key,
        CommitStatus.name,
        CommitStatus.state,
        CommitStatus.commit_hash,
        CommitStatus.updated_on,
        CommitStatus.url,
    )
    .where(
        CommitStatus.repository_id == bindparam("repository_id"),
        (CommitStatus.refname == bindparam("branch"))
        | (CommitStatus.commit_hash == bindparam("head")),
    )
    .order_by(CommitStatus.updated_on.desc())
    .limit(200)
)


def health_repository(session: Session, workspace: str, slug: str) -> Row[Any] | None:
    """The columns a health summary needs of a live repository, with its open pull-request
    count and oldest (`open_count`, `oldest_open`); None when bbsync does not know it."""
    return session.execute(_REPOSITORY, {"workspace": workspace, "slug": slug}).first()


def repository_health(
    session: Session, repo: HealthRepository, pipeline_runs: int = 20
) -> dict[str, Any]:
    """Open pull requests and the oldest one's age, the last default-branch build, the
    pipeline success rate over the last `pipeline_runs` completed runs, the last push.
    `repo` from `health_repository` brings its open pull requests along."""
    now = utcnow()
    if isinstance(repo, Row):
        open_count, oldest = repo.open_count, repo.oldest_open
    else:
        open_count, oldest = session.execute(_OPEN, {"repository_id": repo.id}).one()
    recent = list(session.execute(_PIPELINES, {"repository_id": repo.id, "runs": pipeline_runs}))
    results = [p.result for p in recent]
    successful = sum(1 for r in results if r == "SUCCESSFUL")
    statuses = list(
        session.execute(
            _STATUSES,
            {"repository_id": repo.id, "branch": repo.default_branch, "head": repo.head_commit},
        )
    )
    return {
        "repository": repo.full_name,
        "default_branch": repo.default_branch,
        "open_pull_requests": int(open_count or 0),
        "oldest_open_pull_request_age_seconds": _age(now, oldest),
        "last_build": _last_build(session, repo, statuses, recent),
        "builds_on_head": _builds_on_head(repo, statuses),
        "pipeline_runs": len(results),
        "pipeline_success_rate": round(successful / len(results), 3) if results else None,
        "last_push_at": repo.last_push_at or repo.updated_on,
    }


def _age(now: datetime, since: datetime | None) -> int | None:
    if since is None:
        return None
    if since.tzinfo is None:  # SQLite aggregates lose the UTC marker
        from datetime import UTC

        since = since.replace(tzinfo=UTC)
    return max(0, int((now - since).total_seconds()))


def _last_build(
    session: Session, repo: HealthRepository, statuses: list[Any], recent: list[Any]
) -> dict[str, Any] | None:
    """The newest finished build on the default branch: a commit status or a pipeline."""
    branch = repo.default_branch
    status = next((s for s in statuses if s.state != "INPROGRESS"), None)
    pipeline = next((p for p in recent if p.ref_name == branch), None)
    if pipeline is None and recent:
        # The last runs were all on other branches: look further back for this one.
        pipeline = session.execute(
            select(
                Pipeline.result,
                Pipeline.ref_name,
                Pipeline.build_number,
                Pipeline.commit_hash,
                Pipeline.completed_on,
            )
            .where(
                Pipeline.repository_id == repo.id,
                Pipeline.state == "COMPLETED",
                Pipeline.ref_name == branch,
            )
            .order_by(Pipeline.completed_on.desc())
            .limit(1)
        ).first()
    candidates: list[dict[str, Any]] = []
    if status is not None:
        candidates.append(
            {
                "source": "commit_status",
                "key": status.key,
                "name": status.name,
                "result": status.state,
                "commit": status.commit_hash,
                "at": status.updated_on,
                "url": status.url,
            }
        )
    if pipeline is not None:
        candidates.append(
            {
                "source": "pipeline",
                "key": f"pipeline-{pipeline.build_number}",
                "name": f"Pipeline #{pipeline.build_number}",
                "result": pipeline.result,
                "commit": pipeline.commit_hash,
                "at": pipeline.completed_on,
                "url": None,
            }
        )
    dated = [c for c in candidates if c["at"] is not None]
    return max(dated, key=lambda c: c["at"]) if dated else (candidates[0] if candidates else None)


def _builds_on_head(repo: HealthRepository, statuses: list[Any]) -> list[dict[str, Any]]:
    """The latest result per build key on the default branch head."""
    if not repo.head_commit:
        return []
    latest: dict[str, Any] = {}
    for status in statuses:  # newest first
        if status.commit_hash == repo.head_commit:
            latest.setdefault(status.key, status)
    return [
        {"key": s.key, "state": s.state, "name": s.name, "updated_on": s.updated_on}
        for s in sorted(latest.values(), key=lambda s: s.key)
    ]
