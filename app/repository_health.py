"""Repository health, derived from stored rows only: never a Bitbucket call at read time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import CommitStatus, Pipeline, PullRequest, Repository, utcnow


def repository_health(
    session: Session, repo: Repository, pipeline_runs: int = 20
) -> dict[str, Any]:
    """Open pull requests and the oldest one's age, the last default-branch build, the
    pipeline success rate over the last `pipeline_runs` completed runs, the last push."""
    now = utcnow()
    open_count, oldest = session.execute(
        select(func.count(), func.min(PullRequest.created_on)).where(
            PullRequest.repository_id == repo.id, PullRequest.state == "OPEN"
        )
    ).one()
    recent = list(
        session.scalars(
            select(Pipeline)
            .where(Pipeline.repository_id == repo.id, Pipeline.state == "COMPLETED")
            .order_by(Pipeline.created_on.desc())
            .limit(pipeline_runs)
        )
    )
    results = [p.result for p in recent]
    successful = sum(1 for r in results if r == "SUCCESSFUL")
    statuses = list(
        session.scalars(
            select(CommitStatus)
            .where(
                CommitStatus.repository_id == repo.id,
                (CommitStatus.refname == repo.default_branch)
                | (CommitStatus.commit_hash == repo.head_commit),
            )
            .order_by(CommitStatus.updated_on.desc())
            .limit(200)
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
    session: Session, repo: Repository, statuses: list[CommitStatus], recent: list[Pipeline]
) -> dict[str, Any] | None:
    """The newest finished build on the default branch: a commit status or a pipeline."""
    branch = repo.default_branch
    status = next((s for s in statuses if s.state != "INPROGRESS"), None)
    pipeline = next((p for p in recent if p.ref_name == branch), None)
    if pipeline is None and recent:
        # The last runs were all on other branches: look further back for this one.
        pipeline = session.scalars(
            select(Pipeline)
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


def _builds_on_head(repo: Repository, statuses: list[CommitStatus]) -> list[dict[str, Any]]:
    """The latest result per build key on the default branch head."""
    if not repo.head_commit:
        return []
    latest: dict[str, CommitStatus] = {}
    for status in statuses:  # newest first
        if status.commit_hash == repo.head_commit:
            latest.setdefault(status.key, status)
    return [
        {"key": s.key, "state": s.state, "name": s.name, "updated_on": s.updated_on}
        for s in sorted(latest.values(), key=lambda s: s.key)
    ]
