"""`GET /`: the operator's status page, rendered on the server (no build step).

Workspaces and their last syncs, entities by kind, the budget over the last hour (calls per
minute by endpoint family against the limit, 429s marked), recent deliveries and failures,
unusable catalog files, repositories whose catalog refresh failed, quota alerts, the token's
age, and per workspace how far the sweeps within a share (activity, people) are behind. Open
unless `BBSYNC_STATUS_BASIC_AUTH` asks for a login.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast

import redis
from flask import Blueprint, abort, render_template
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.accounting import MINUTE_KEY
from app.bitbucket.quota import alert_counts
from app.config import Settings
from app.models import (
    CatalogEntity,
    CatalogFile,
    Pipeline,
    PullRequest,
    Repository,
    SyncRun,
    WebhookDelivery,
    Workspace,
)
from app.ops.credentials_age import token_age_notice
from app.repository_health import repository_health
from app.sync.coverage import sweeps
from app.sync.refresh_failures import stale_repositories
from app.web import runtime
from app.web.auth import require_status_login

status_page = Blueprint("status_page", __name__)
REFRESH_SECONDS = 60  # the page reloads itself, gently
status_page.before_request(require_status_login)

FAMILY_COLOURS = {
    "repositories": "#4c78a8",
    "src": "#f58518",
    "search": "#54a24b",
    "pullrequests": "#b279a2",
    "pipelines": "#e45756",
    "statuses": "#72b7b2",
    "members": "#eeca3b",
    "permissions": "#9d755d",
    "refs": "#bab0ac",
    "workspaces": "#79706e",
    "hooks": "#d67195",
    "groups": "#8cd17d",
}


def budget_minutes(client: redis.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """Calls per minute by family for the last 60 minutes (oldest first)."""
    minute = int((now or time.time()) // 60)
    pipe = client.pipeline(transaction=False)
    for m in range(minute - 59, minute + 1):
        pipe.hgetall(f"{MINUTE_KEY}/{m}")
    rows = []
    for offset, raw in enumerate(cast(list[dict[bytes, bytes]], pipe.execute())):
        counts = {k.decode(): int(v) for k, v in raw.items()}
        rate_limited = counts.pop("429", 0)
        rows.append(
            {
                "minute": minute - 59 + offset,
                "families": counts,
                "total": sum(counts.values()),
                "rate_limited": rate_limited,
            }
        )
    return rows


def _nice_top(value: float) -> int:
    """The smallest of 1, 2, 5 times 10^n at or above `value` (a readable axis maximum)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _chart(minutes: list[dict[str, Any]], width: int = 720, height: int = 180) -> dict[str, Any]:
    """Calls per minute stacked by family, as SVG coordinates, with labelled axes.

    No limit line here: Bitbucket's limit is a rolling hour, shown beside as the window gauges.
    """
    top = _nice_top(max([m["total"] for m in minutes] + [1]))
    bar = width / len(minutes)
    bars = []
    for index, m in enumerate(minutes):
        y = float(height)
        for family, count in sorted(m["families"].items()):
            h = count / top * height
            y -= h
            bars.append(
                {
                    "x": index * bar,
                    "y": y,
                    "w": max(bar - 1, 1),
                    "h": h,
                    "colour": FAMILY_COLOURS.get(family, "#999"),
                    "title": f"{_clock(m['minute'])} {family}: {count}",
                }
            )
    marks = [
        {"x": i * bar + bar / 2, "count": m["rate_limited"]}
        for i, m in enumerate(minutes)
        if m["rate_limited"]
    ]
    x_ticks = [
        {"x": i * bar, "label": _clock(m["minute"])} for i, m in enumerate(minutes) if i % 10 == 0
    ]
    y_ticks = [{"y": height - v / top * height, "label": v} for v in (0, top // 2, top)]
    used = sorted({f for m in minutes for f, n in m["families"].items() if n})
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "marks": marks,
        "x_ticks": x_ticks,
        "y_ticks": y_ticks,
        "families": [(f, FAMILY_COLOURS.get(f, "#999")) for f in used],
    }


def _clock(minute: int) -> str:
    return time.strftime("%H:%M", time.gmtime(minute * 60))


def _windows(snapshots: list[Any], width: int = 720) -> list[dict[str, Any]]:
    """One gauge per Bitbucket resource: calls in the rolling window against its limit."""
    gauges = []
    for snap in snapshots:
        gauges.append(
            {
                "resource": snap.resource,
                "snapshot": snap,
                "used_w": min(1.0, snap.used / snap.limit) * width,
                "reserve_x": (snap.limit - snap.reserve) / snap.limit * width,
                "width": width,
            }
        )
    return gauges


@status_page.get("/")
def status() -> Any:
    rt = runtime()
    settings = rt.settings
    page: dict[str, Any] = {
        "settings": settings,
        "problems": [],
        "colours": FAMILY_COLOURS,
        "token": token_age_notice(settings),
        "generated_at": datetime.now(UTC),
        "refresh_seconds": REFRESH_SECONDS,
    }
    try:
        page["budget"] = rt.budget.snapshot()
        page["windows"] = _windows([budget.snapshot() for budget in rt.budgets])
        minutes = budget_minutes(rt.redis)
        page["minutes_total"] = sum(m["total"] for m in minutes)
        page["rate_limited"] = sum(m["rate_limited"] for m in minutes)
        page["chart"] = _chart(minutes)
        page["alerts"] = alert_counts(rt.redis)
    except redis.RedisError as exc:
        page["problems"].append(f"Redis unreachable ({type(exc).__name__})")
    try:
        with rt.sessions() as session:
            page.update(_database_figures(session, settings))
    except SQLAlchemyError as exc:
        page["problems"].append(f"database unavailable or not migrated ({type(exc).__name__})")
    return render_template("status.html", **page)


def _database_figures(session: Any, settings: Settings) -> dict[str, Any]:
    workspaces = []
    for ws in session.scalars(select(Workspace).order_by(Workspace.slug)):
        repos = session.scalar(
            select(func.count())
            .select_from(Repository)
            .where(Repository.workspace_id == ws.id, Repository.deleted_at.is_(None))
        )
        runs = []
        for kind in ("repositories", "catalog", "activity", "members"):
            run = session.scalars(
                select(SyncRun)
                .where(
                    SyncRun.workspace == ws.slug,
                    SyncRun.kind == kind,
                    SyncRun.status != "skipped",  # the run that held the lock is the news
                )
                .order_by(SyncRun.started_at.desc())
                .limit(1)
            ).first()
            if run is not None:
                runs.append(run)
        workspaces.append(
            {
                "slug": ws.slug,
                "repositories": repos,
                "runs": runs,
                "sweeps": sweeps(session, ws.slug, settings),
            }
        )
    entities = session.execute(
        select(CatalogEntity.kind, func.count())
        .where(CatalogEntity.deleted_at.is_(None))
        .group_by(CatalogEntity.kind)
        .order_by(CatalogEntity.kind)
    ).all()
    deliveries = session.scalars(
        select(WebhookDelivery).order_by(WebhookDelivery.received_at.desc()).limit(15)
    ).all()
    failures = session.scalar(
        select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status == "failed")
    )
    broken = session.execute(
        select(
            Repository.full_name,
            CatalogFile.path,
            CatalogFile.parse_error,
            Repository.default_branch,
        )
        .join(Repository, CatalogFile.repository_id == Repository.id)
        .where(
            CatalogFile.parse_error.is_not(None),
            CatalogFile.deleted_at.is_(None),
            Repository.deleted_at.is_(None),
        )
        .order_by(Repository.full_name)
        .limit(20)
    ).all()
    return {
        "workspaces": workspaces,
        "entities": entities,
        "deliveries": deliveries,
        "failed_deliveries": failures,
        "broken_files": broken,
        "stale_repositories": stale_repositories(session),
    }


@status_page.get("/repositories/<workspace>/<slug>")
def repository(workspace: str, slug: str) -> Any:
    """One repository's health, open pull requests and recent pipelines, for people."""
    rt = runtime()
    with rt.sessions() as session:
        repo = session.scalars(
            select(Repository)
            .join(Workspace, Repository.workspace_id == Workspace.id)
            .where(
                Workspace.slug == workspace,
                Repository.slug == slug,
                Repository.deleted_at.is_(None),
            )
        ).first()
        if repo is None:
            abort(404, description=f"repository {workspace}/{slug} is not known to bbsync")
        health = repository_health(session, repo, rt.settings.health_pipeline_runs)
        pulls = session.scalars(
            select(PullRequest)
            .where(PullRequest.repository_id == repo.id, PullRequest.state == "OPEN")
            .order_by(PullRequest.updated_on.desc())
            .limit(20)
        ).all()
        pipelines = session.scalars(
            select(Pipeline)
            .where(Pipeline.repository_id == repo.id)
            .order_by(Pipeline.created_on.desc())
            .limit(10)
        ).all()
        return render_template(
            "repository.html",
            repo=repo,
            health=health,
            pulls=pulls,
            pipelines=pipelines,
            web_url=rt.settings.bitbucket_web_url,
            generated_at=datetime.now(UTC),
            refresh_seconds=REFRESH_SECONDS,
        )
