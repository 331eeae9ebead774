"""The `bbsync` command: sync now, see the status and budget, check the configuration."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click
import redis
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.bitbucket.errors import BitbucketError, RetryLater
from app.cli.datacenter import datacenter_budget_line, sync_datacenter, sync_datacenter_members
from app.cli.doctor import database_check, run_checks
from app.cli.webhooks import deliveries, webhooks
from app.config import Settings, SettingsError, load_settings
from app.models import (
    CatalogEntity,
    CatalogFile,
    ParkedTask,
    Repository,
    SyncRun,
    SyncStatus,
    Workspace,
)
from app.ops.credentials_age import token_age_notice
from app.ops.logs import configure_logging
from app.runtime import Runtime
from app.sync.activity import ActivityReconcile
from app.sync.catalog.phase import CatalogProgress
from app.sync.coverage import sweeps
from app.sync.datacenter_activity import DataCenterActivityReconcile
from app.sync.eta import budget_eta_hours, catalog_remaining, describe_eta, listing_remaining
from app.sync.liveness import RunWatch, SyncBusy, watching
from app.sync.people import PeopleSync
from app.sync.refresh_failures import stale_repositories
from app.sync.repositories import SyncProgress
from app.sync.workspace import WorkspaceSync
from app.task_names import (
    RECONCILE_ACTIVITY,
    RECONCILE_DATACENTER_ACTIVITY,
    SYNC_DATACENTER,
    SYNC_MEMBERS,
    SYNC_WORKSPACE,
    enqueue,
    producer,
)


def _runtime(ctx: click.Context) -> Runtime:
    rt: Runtime = ctx.obj
    return rt


@click.group()
@click.version_option(package_name="bbsync", prog_name="bbsync")
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
    if not workspaces and settings.datacenter is None:
        raise click.UsageError(
            "no workspace: set BITBUCKET_WORKSPACES (or BITBUCKET_DC_URL) or pass --workspace"
        )
    return workspaces


@main.command()
@click.option("--workspace", "-w", "chosen", multiple=True, help="Only this workspace.")
@click.option("--queue", is_flag=True, help="Enqueue on the workers instead of running here.")
@click.option(
    "--activity", is_flag=True, help="Reconcile pull requests, pipelines and build statuses."
)
@click.option("--members", is_flag=True, help="Members, groups and repository permissions.")
@click.pass_context
def sync(
    ctx: click.Context, chosen: tuple[str, ...], queue: bool, activity: bool, members: bool
) -> None:
    """Sync now: list every repository of each workspace, then read the catalog files that
    changed since the last sync."""
    rt = _runtime(ctx)
    workspaces = _workspaces(rt.settings, chosen)
    if queue:
        app = producer(rt.settings.broker_url)
        for workspace in workspaces:
            task = SYNC_MEMBERS if members else RECONCILE_ACTIVITY if activity else SYNC_WORKSPACE
            task_id = enqueue(app, task, workspace)
            click.echo(f"{workspace}: queued as task {task_id}")
        server = rt.settings.datacenter
        if server is not None and not chosen:
            task = (
                SYNC_MEMBERS
                if members
                else RECONCILE_DATACENTER_ACTIVITY
                if activity
                else SYNC_DATACENTER
            )
            task_id = enqueue(app, task, server.host)
            click.echo(f"Data Center {server.host}: queued as task {task_id}")
        return
    failed = False
    for workspace in workspaces:
        # Like a worker's task: heartbeat on the run, one sync per kind and workspace.
        watch = RunWatch(
            rt.engine,
            rt.redis,
            task_id=None,
            interval=rt.settings.run_heartbeat_seconds,
            lock_seconds=rt.settings.run_stale_seconds,
        )
        try:
            with watching(watch):
                if members:
                    failed |= not _run_service(rt, workspace, PeopleSync)
                elif activity:
                    failed |= not _run_service(rt, workspace, ActivityReconcile)
                else:
                    failed |= not _sync_workspace(rt, workspace)
        except SyncBusy as exc:
            click.echo(f"{workspace}: {exc}", err=True)
    if rt.settings.datacenter is not None and not chosen:
        if members:
            failed |= not sync_datacenter_members(rt, _report_run)
        elif activity:
            failed |= not _datacenter_activity(rt)
        else:
            failed |= not sync_datacenter(rt, _report_run)
    if failed:
        sys.exit(1)


def _sync_workspace(rt: Runtime, workspace: str) -> bool:
    """Both phases in this process, each with a progress bar; False when one failed."""
    client = rt.bitbucket()
    with rt.sessions() as session:
        sync = WorkspaceSync(client, session, session.commit, rt.settings)
        phases: list[tuple[str, Callable[[], SyncRun], Any]] = [
            ("repositories", lambda: sync.repositories.run(workspace), sync.repositories),
            ("catalog", lambda: sync.catalog.run(workspace), sync.catalog),
        ]
        if sync.catalog.resuming(workspace):
            click.echo(f"{workspace}: resuming the paused catalog phase")
            phases = phases[1:]
        for phase, run_phase, service in phases:
            bar: Any
            eta = _Eta(rt)
            with click.progressbar(length=0, label=f"{workspace} {phase}", show_pos=True) as bar:

                def on_progress(
                    progress: SyncProgress | CatalogProgress,
                    bar: Any = bar,
                    phase: str = phase,
                    eta: _Eta = eta,
                ) -> None:
                    done, total = _progress_figures(progress)
                    if total and bar.length != total:
                        bar.length = total
                    label = f"{workspace} {phase}: {_describe(progress)}"
                    bar.label = ", ".join(filter(None, (label, eta.update(progress))))
                    bar.update(done - bar.pos)

                service.on_progress = on_progress
                try:
                    run = run_phase()
                except RetryLater as exc:
                    click.echo(f"\n{workspace}: paused, run again to resume: {exc}", err=True)
                    if eta.update(None, force=True):
                        click.echo(f"{workspace}: {eta.text}", err=True)
                    return False
                except BitbucketError as exc:
                    click.echo(f"\n{workspace}: failed: {exc}", err=True)
                    return False
            _report_run(workspace, run)
    return True


class _Eta:
    """The budget-bound ETA of one phase, from its progress reports; the budgets are read at
    most every `every` seconds (each read is a Redis round trip per resource)."""

    def __init__(self, rt: Runtime, every: float = 1.0) -> None:
        self.rt, self.every = rt, every
        self.text = ""
        self._read_at = -every
        self._last: SyncProgress | CatalogProgress | None = None

    def update(self, progress: SyncProgress | CatalogProgress | None, force: bool = False) -> str:
        """The ETA text for `progress` (None: the last one seen), re-read when due or `force`."""
        progress = progress or self._last
        self._last = progress
        now = time.monotonic()
        if progress is None or (now - self._read_at < self.every and not force):
            return self.text
        self._read_at = now
        if isinstance(progress, SyncProgress):
            remaining = listing_remaining(progress.seen, progress.total)
        else:
            remaining = catalog_remaining(
                progress.checked, progress.total, progress.files_fetched, progress.calls
            )
        try:
            api, raw = self.rt.budget.snapshot(), self.rt.raw_budget.snapshot()
        except redis.RedisError:
            return self.text  # the sync itself reports Redis being down
        self.text = describe_eta(budget_eta_hours(remaining, api, raw))
        return self.text


def _run_service(rt: Runtime, workspace: str, service: Any) -> bool:
    """Run one sync service (activity, members) here and report its run."""
    with rt.sessions() as session:
        client = rt.bitbucket()
        if service is ActivityReconcile:
            runner = ActivityReconcile(
                client, session, session.commit, pipelines=rt.settings.reconcile_pipelines
            )
        else:
            runner = service(client, session, session.commit, rt.settings)
        try:
            run = runner.run(workspace)
        except RetryLater as exc:
            click.echo(f"{workspace}: paused, run again to resume: {exc}", err=True)
            return False
        except BitbucketError as exc:
            click.echo(f"{workspace}: failed: {exc}", err=True)
            return False
        _report_run(workspace, run)
    return True


def _datacenter_activity(rt: Runtime) -> bool:
    """Pull requests and build statuses of every Data Center project here, as the worker's
    task does (one run under the server's host); False when it paused or failed."""
    host = rt.datacenter_settings.host
    watch = RunWatch(
        rt.engine,
        rt.redis,
        task_id=None,
        interval=rt.settings.run_heartbeat_seconds,
        lock_seconds=rt.settings.run_stale_seconds,
    )
    try:
        with watching(watch), rt.sessions() as session:
            run = DataCenterActivityReconcile(
                rt.datacenter(), session, session.commit, rt.datacenter_settings
            ).run_server()
    except SyncBusy as exc:
        click.echo(f"Data Center {host}: {exc}", err=True)
        return True
    except RetryLater as exc:
        click.echo(f"Data Center {host}: paused, run again to resume: {exc}", err=True)
        return False
    except BitbucketError as exc:
        click.echo(f"Data Center {host}: failed: {exc}", err=True)
        return False
    _report_run(host, run)
    return True


def _progress_figures(progress: SyncProgress | CatalogProgress) -> tuple[int, int | None]:
    if isinstance(progress, SyncProgress):
        return progress.seen, progress.total
    return progress.checked, progress.total


def _describe(progress: SyncProgress | CatalogProgress) -> str:
    if isinstance(progress, SyncProgress):
        return f"{progress.seen} repositories, {progress.calls} calls"
    return (
        f"{progress.checked}/{progress.total} repositories read, "
        f"{progress.files_fetched} files fetched, {progress.calls} calls"
    )


def _report_run(workspace: str, run: SyncRun) -> None:
    counts = ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in run.counts.items() if not isinstance(v, list)
    )
    click.echo(
        f"{workspace} {run.kind}: {run.status} in {(run.duration_ms or 0) / 1000:.1f}s, "
        f"{run.api_calls} calls ({counts})"
    )
    if run.error:
        click.echo(f"{workspace}: warning: {run.error}", err=True)
    for conflict in run.counts.get("conflicts") or []:
        click.echo(f"{workspace}: conflict: {conflict}", err=True)


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """The shared budget, and each workspace's repositories and last sync."""
    rt = _runtime(ctx)
    ok = True
    # Data Center alone: the Cloud windows are not in use.
    cloud = bool(rt.settings.workspaces) or rt.settings.datacenter is None
    try:
        for budget in rt.budgets if cloud else ():
            b = budget.snapshot()
            name = "budget" if budget is rt.budget else f"budget {b.resource}"
            click.echo(
                f"{name} ({rt.settings.credential.kind.value}): {b.used}/{b.limit} used in the "
                f"last {b.window_seconds}s, {b.remaining} remaining, {b.reserve} reserved for "
                f"webhooks, {b.backfill_remaining} left for backfill"
            )
            if b.announced_limit is not None:
                click.echo(f"  limit announced by Bitbucket: {b.announced_limit}")
            if b.frees_at:
                click.echo(f"  oldest call frees at {b.frees_at.isoformat(timespec='seconds')}")
            if b.paused_until:
                until = b.paused_until.isoformat(timespec="seconds")
                click.echo(f"  PAUSED after a 429 until {until}")
    except redis.RedisError as exc:
        ok = False
        click.echo(f"budget: Redis unreachable at REDIS_URL ({type(exc).__name__})", err=True)
    if rt.settings.datacenter is not None:
        click.echo(datacenter_budget_line(rt))
    notice = token_age_notice(rt.settings)
    if notice:
        click.echo(f"token: {notice[0].upper()}: {notice[1]}")
    try:
        with rt.sessions() as session:
            for line in _workspace_lines(session, rt.settings):
                click.echo(line)
            for line in _parked_lines(session):
                click.echo(line)
    except SQLAlchemyError:
        ok = False
        check = database_check(rt)
        click.echo(check.line() if not check.ok else "database: query failed", err=True)
    if not ok:
        sys.exit(1)


def _workspace_lines(session: Any, settings: Settings) -> list[str]:
    configured = settings.workspaces
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
        entities = dict(
            session.execute(
                select(CatalogEntity.kind, func.count())
                .where(CatalogEntity.workspace == slug, CatalogEntity.deleted_at.is_(None))
                .group_by(CatalogEntity.kind)
            ).all()
        )
        line = f"workspace {slug}: {repos} repositories"
        if entities:
            line += ", entities " + ", ".join(f"{k} {n}" for k, n in sorted(entities.items()))
        lines.append(line)
        runs = [_last_run(session, slug, kind) for kind in ("repositories", "catalog")]
        if not any(runs):
            lines.append("  never synced")
        for last in filter(None, runs):
            when = (last.finished_at or last.started_at).isoformat(timespec="seconds")
            lines.append(
                f"  last {last.kind} sync {last.status} at {when} ({last.api_calls} calls)"
            )
            if last.error:
                lines.append(f"    error: {last.error}")
            for conflict in (last.counts or {}).get("conflicts") or []:
                lines.append(f"    conflict: {conflict}")
        if workspace is not None:
            lines.extend(_parse_error_lines(session, workspace))
            lines.extend(sweep.line() for sweep in sweeps(session, slug, settings))
    for stale in stale_repositories(session):
        since = stale.since.isoformat(timespec="seconds")
        lines.append(f"STALE {stale.full_name}: catalog refresh failed at {since}: {stale.reason}")
    return lines


def _parked_lines(session: Any, shown: int = 10) -> list[str]:
    parked = session.scalars(
        select(ParkedTask).order_by(ParkedTask.parked_at.desc()).limit(shown)
    ).all()
    total = session.scalar(select(func.count()).select_from(ParkedTask)) or 0
    if not total:
        return []
    lines = [f"PARKED tasks (their worker died on them; not run again): {total}"]
    for task in parked:
        when = task.parked_at.isoformat(timespec="seconds")
        lines.append(f"  {task.task_name} {task.args} at {when}: {task.reason}")
    return lines


def _last_run(session: Any, workspace: str, kind: str) -> SyncRun | None:
    run: SyncRun | None = session.scalars(
        select(SyncRun)
        .where(
            SyncRun.workspace == workspace,
            SyncRun.kind == kind,
            SyncRun.status != SyncStatus.SKIPPED.value,
        )
        .order_by(SyncRun.started_at.desc())
        .limit(1)
    ).first()
    return run


def _parse_error_lines(session: Any, workspace: Workspace, shown: int = 10) -> list[str]:
    broken = session.execute(
        select(Repository.full_name, CatalogFile.path, CatalogFile.parse_error)
        .join(Repository, CatalogFile.repository_id == Repository.id)
        .where(
            Repository.workspace_id == workspace.id,
            Repository.deleted_at.is_(None),
            CatalogFile.deleted_at.is_(None),
            CatalogFile.parse_error.is_not(None),
        )
        .order_by(Repository.full_name, CatalogFile.path)
    ).all()
    if not broken:
        return []
    lines = [f"  {len(broken)} catalog files cannot be used:"]
    lines += [f"    {name}/{path}: {error}" for name, path, error in broken[:shown]]
    if len(broken) > shown:
        lines.append(f"    … and {len(broken) - shown} more (GET /api/catalog-files?errors=1)")
    return lines


@main.command()
@click.option("--url", "hook_url", default=None, help="The URL the webhook should point at.")
@click.pass_context
def doctor(ctx: click.Context, hook_url: str | None) -> None:
    """Check the configuration end to end: one line per check, with a fix."""
    checks = run_checks(_runtime(ctx), hook_url=hook_url)
    for check in checks:
        click.echo(check.line())
    if not all(c.ok for c in checks):
        sys.exit(1)


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Migrate the database to the newest revision (what the Procfile's release phase runs)."""
    from alembic import command
    from alembic.config import Config

    from app.cli.doctor import ALEMBIC_INI

    rt = _runtime(ctx)
    check = database_check(rt)
    if check.ok:
        click.echo(f"database: {check.detail}")
        return
    if check.detail.startswith("unreachable"):
        click.echo(check.line(), err=True)
        sys.exit(1)
    try:
        command.upgrade(Config(ALEMBIC_INI), "head")  # the URL comes from the same settings
    except SQLAlchemyError as exc:
        click.echo(f"database: migration failed ({type(exc).__name__}: {exc.args[0]})", err=True)
        sys.exit(1)
    click.echo(f"database: {database_check(rt).detail}")


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
    if s.datacenter is not None:
        dc = s.datacenter
        click.echo(f"BITBUCKET_DC_URL: {dc.url}")
        click.echo(f"Data Center credential: {dc.credential_label}")
        click.echo(f"BITBUCKET_DC_PROJECTS: {','.join(dc.projects) or '(every visible project)'}")
        click.echo(f"Data Center budget: {dc.burst} calls at once, {dc.rate_per_second:g}/s")


def _mask_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable)"


main.add_command(webhooks)
main.add_command(deliveries)

if __name__ == "__main__":
    main()
