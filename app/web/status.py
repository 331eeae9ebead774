"""`GET /`: the operator's status page, rendered on the server (no build step).

Workspaces and their last syncs, entities by kind, the budget over the last hour (calls per
minute by endpoint family against the limit, 429s marked), recent deliveries and failures,
unusable catalog files, quota alerts and the token's age.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis
from flask import Blueprint, render_template
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.accounting import MINUTE_KEY
from app.bitbucket.quota import alert_counts
from app.credentials_age import token_age_notice
from app.models import CatalogEntity, CatalogFile, Repository, SyncRun, WebhookDelivery, Workspace
from app.web import runtime

status_page = Blueprint("status_page", __name__)

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


def _chart(
    minutes: list[dict[str, Any]], limit: int, width: int = 720, height: int = 180
) -> dict[str, Any]:
    """Bars (stacked by family) and the limit spread over the hour, as SVG coordinates."""
    per_minute_limit = limit / 60
    top = max([m["total"] for m in minutes] + [per_minute_limit, 1]) * 1.1
    bar = width / len(minutes)
    bars = []
    for index, m in enumerate(minutes):
        y = height
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
                    "title": f"{family}: {count}",
                }
            )
    marks = [
        {"x": i * bar + bar / 2, "count": m["rate_limited"]}
        for i, m in enumerate(minutes)
        if m["rate_limited"]
    ]
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "marks": marks,
        "limit_y": height - per_minute_limit / top * height,
        "per_minute_limit": round(per_minute_limit, 1),
    }


@status_page.get("/")
def status() -> Any:
    rt = runtime()
    settings = rt.settings
    page: dict[str, Any] = {
        "settings": settings,
        "problems": [],
        "colours": FAMILY_COLOURS,
        "token": token_age_notice(settings),
    }
    try:
        page["budget"] = rt.budget.snapshot()
        minutes = budget_minutes(rt.redis)
        page["minutes_total"] = sum(m["total"] for m in minutes)
        page["rate_limited"] = sum(m["rate_limited"] for m in minutes)
        page["chart"] = _chart(minutes, settings.rate_limit_per_hour)
        page["alerts"] = alert_counts(rt.redis)
    except redis.RedisError as exc:
        page["problems"].append(f"Redis unreachable ({type(exc).__name__})")
    try:
        with rt.sessions() as session:
            page.update(_database_figures(session))
    except SQLAlchemyError as exc:
        page["problems"].append(f"database unavailable or not migrated ({type(exc).__name__})")
    return render_template("status.html", **page)


def _database_figures(session: Any) -> dict[str, Any]:
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
        workspaces.append({"slug": ws.slug, "repositories": repos, "runs": runs})
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
        select(Repository.full_name, CatalogFile.path, CatalogFile.parse_error)
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
    }
