"""The `bbsync` command: sync now, see the status and budget, check the configuration."""

from __future__ import annotations

import sys
from typing import Any

import click
import redis
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.errors import BitbucketError, RetryLater
from app.config import Settings, SettingsError, load_settings
from app.logs import configure_logging
from app.models import Repository, SyncRun, Workspace
from app.runtime import Runtime
from app.sync.repositories import RepositorySync, SyncProgress
from app.tasks import SYNC_REPOSITORIES, enqueue, producer


def _runtime(ctx: click.Context) -> Runtime:
    rt: Runtime = ctx.obj
    return rt


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """bbsync keeps a Backstage catalog in step with Bitbucket Cloud."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        click.echo(f"bbsync: configuration error: {exc}", err=True)
        sys.exit(2)
    configure_logging(settings)
    ctx.obj = Runtime(settings)


def _workspaces(settings: Settings, chosen: tuple[str, ...]) -> tuple[str, ...]:
    workspaces = chosen or settings.workspaces
    if not workspaces:
        raise click.UsageError("no workspace: set BITBUCKET_WORKSPACES or pass --workspace")
    return workspaces


@main.command()
@click.option("--workspace", "-w", "chosen", multiple=True, help="Only this workspace.")
@click.option("--queue", is_flag=True, help="Enqueue on the workers instead of running here.")
@click.pass_context
def sync(ctx: click.Context, chosen: tuple[str, ...], queue: bool) -> None:
    """Sync now: page through every repository of each workspace and store it."""
    rt = _runtime(ctx)
    workspaces = _workspaces(rt.settings, chosen)
    if queue:
        app = producer(rt.settings.broker_url)
        for workspace in workspaces:
            task_id = enqueue(app, SYNC_REPOSITORIES, workspace)
            click.echo(f"{workspace}: queued as task {task_id}")
        return
    failed = False
    for workspace in workspaces:
        failed |= not _sync_workspace(rt, workspace)
    if failed:
        sys.exit(1)


def _sync_workspace(rt: Runtime, workspace: str) -> bool:
    client = rt.bitbucket()
    bar: Any
    with click.progressbar(length=0, label=workspace, show_pos=True) as bar:

        def on_progress(progress: SyncProgress) -> None:
            if progress.total and bar.length != progress.total:
                bar.length = progress.total
            bar.label = f"{workspace}: {progress.seen} repositories, {progress.calls} calls"
            bar.update(progress.seen - bar.pos)

        with rt.sessions() as session:
            try:
                run = RepositorySync(client, session, session.commit, on_progress=on_progress).run(
                    workspace
                )
            except RetryLater as exc:
                click.echo(f"\n{workspace}: paused, run again to resume: {exc}", err=True)
                return False
            except BitbucketError as exc:
                click.echo(f"\n{workspace}: failed: {exc}", err=True)
                return False
    counts = ", ".join(f"{k} {v}" for k, v in run.counts.items())
    click.echo(
        f"{workspace}: {run.status} in {(run.duration_ms or 0) / 1000:.1f}s, "
        f"{run.api_calls} calls ({counts})"
    )
    if run.error:
        click.echo(f"{workspace}: warning: {run.error}", err=True)
    return True


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """The shared budget, and each workspace's repositories and last sync."""
    rt = _runtime(ctx)
    ok = True
    try:
        b = rt.budget.snapshot()
        click.echo(
            f"budget ({rt.settings.credential.kind.value}): {b.used}/{b.limit} used in the "
            f"last {b.window_seconds}s, {b.remaining} remaining, {b.reserve} reserved for "
            f"webhooks, {b.backfill_remaining} left for backfill"
        )
        if b.frees_at:
            click.echo(f"  oldest call frees at {b.frees_at.isoformat(timespec='seconds')}")
        if b.paused_until:
            click.echo(f"  PAUSED after a 429 until {b.paused_until.isoformat(timespec='seconds')}")
    except redis.RedisError as exc:
        ok = False
        click.echo(f"budget: Redis unreachable at REDIS_URL ({type(exc).__name__})", err=True)
    try:
        with rt.sessions() as session:
            for line in _workspace_lines(session, rt.settings.workspaces):
                click.echo(line)
    except SQLAlchemyError as exc:
        ok = False
        click.echo(
            f"database: unavailable or not migrated ({type(exc).__name__}); "
            "run `alembic upgrade head`",
            err=True,
        )
    if not ok:
        sys.exit(1)


def _workspace_lines(session: Any, configured: tuple[str, ...]) -> list[str]:
    known = {w.slug: w for w in session.scalars(select(Workspace))}
    lines = []
    for slug in sorted(set(configured) | set(known)):
        workspace = known.get(slug)
        repos = 0
        if workspace is not None:
            repos = session.scalar(
                select(func.count())
                .select_from(Repository)
                .where(Repository.workspace_id == workspace.id, Repository.deleted_at.is_(None))
            )
        last = session.scalars(
            select(SyncRun)
            .where(SyncRun.workspace == slug)
            .order_by(SyncRun.started_at.desc())
            .limit(1)
        ).first()
        line = f"workspace {slug}: {repos} repositories"
        if last is None:
            line += ", never synced"
        else:
            when = (last.finished_at or last.started_at).isoformat(timespec="seconds")
            line += f", last {last.kind} sync {last.status} at {when} ({last.api_calls} calls)"
            if last.error:
                line += f"\n  error: {last.error}"
        lines.append(line)
    return lines


@main.command("config")
@click.pass_context
def show_config(ctx: click.Context) -> None:
    """The effective settings, secrets masked."""
    s = _runtime(ctx).settings
    for name, value in (
        ("DATABASE_URL", _mask_url(s.database_url)),
        ("REDIS_URL", _mask_url(s.redis_url)),
        ("BITBUCKET_API_URL", s.bitbucket_api_url),
        ("BITBUCKET_WORKSPACES", ",".join(s.workspaces) or "(none)"),
        ("credential", s.credential.kind.value),
        ("BITBUCKET_RATE_LIMIT_PER_HOUR", s.rate_limit_per_hour),
        ("reserve for webhooks", s.rate_reserve),
        ("webhook secrets", len(s.webhook_secrets)),
    ):
        click.echo(f"{name}: {value}")


def _mask_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable)"


if __name__ == "__main__":
    main()
