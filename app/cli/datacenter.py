"""`bbsync sync` and `bbsync status` for a Bitbucket Data Center source."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import click
import redis

from app.bitbucket.budget import Priority
from app.bitbucket.errors import BitbucketError, CredentialError, NotFound, RetryLater
from app.models import SyncRun
from app.runtime import Runtime
from app.sync.datacenter import DataCenterSync
from app.sync.datacenter_people import DataCenterPeopleSync
from app.sync.liveness import RunWatch, SyncBusy, watching


def sync_datacenter(rt: Runtime, report: Callable[[str, SyncRun], None]) -> bool:
    """Both phases of every configured (or visible) project here; False when one failed.

    `report(workspace, run)` prints a finished run as the Cloud sync does."""
    server = rt.datacenter_settings
    label = f"Data Center {server.host}"
    client = rt.datacenter()
    watch = RunWatch(
        rt.engine,
        rt.redis,
        task_id=None,
        interval=rt.settings.run_heartbeat_seconds,
        lock_seconds=rt.settings.run_stale_seconds,
    )
    with rt.sessions() as session:
        sync = DataCenterSync(
            client,
            session,
            session.commit,
            rt.settings,
            server,
            on_repositories=lambda p: report_progress(p.workspace, f"{p.seen} repositories"),
            on_catalog=lambda p: report_progress(
                p.workspace, f"{p.checked}/{p.total} repositories read, {p.calls} calls"
            ),
            redis_client=rt.redis,
        )
        try:
            with watching(watch):
                result = sync.run()
        except RetryLater as exc:
            click.echo(f"{label}: paused, run again to resume: {exc}", err=True)
            return False
        except BitbucketError as exc:
            click.echo(f"{label}: failed: {exc}", err=True)
            return False
        for project in result.projects:
            for run in (project.repositories, project.catalog):
                if run is not None:
                    report(project.workspace, run)
    if not result.projects and not result.failed:
        click.echo(f"{label}: nothing to sync (no project visible, or all done)", err=True)
    for line in result.skipped:
        click.echo(line, err=True)
    for line in result.failed:
        click.echo(f"failed: {line}", err=True)
    for warning in result.warnings:
        click.echo(f"{label}: warning: {warning}", err=True)
    return result.ok


def sync_datacenter_members(rt: Runtime, report: Callable[[str, SyncRun], None]) -> bool:
    """Users, groups and permissions of the Data Center server here; False when it failed."""
    server = rt.datacenter_settings
    label = f"Data Center {server.host}"
    watch = RunWatch(
        rt.engine,
        rt.redis,
        task_id=None,
        interval=rt.settings.run_heartbeat_seconds,
        lock_seconds=rt.settings.run_stale_seconds,
    )
    with rt.sessions() as session:
        people = DataCenterPeopleSync(rt.datacenter(), session, session.commit, rt.settings, server)
        try:
            with watching(watch):
                run = people.run()
        except SyncBusy as exc:
            click.echo(f"{label}: {exc}", err=True)
            return True
        except RetryLater as exc:
            click.echo(f"{label}: paused, run again to resume: {exc}", err=True)
            return False
        except BitbucketError as exc:
            click.echo(f"{label}: failed: {exc}", err=True)
            return False
        report(server.host, run)
        for warning in run.counts.get("warnings") or []:
            click.echo(f"{label}: warning: {warning}", err=True)
    return True


def report_progress(workspace: str, what: str) -> None:
    click.echo(f"{workspace}: {what}", err=True)


def datacenter_checks(rt: Runtime) -> list[tuple[str, bool, str, str]]:
    """`bbsync doctor`'s Data Center checks: `(name, ok, detail, fix)` each."""
    server = rt.datacenter_settings
    name = f"Data Center credential ({server.host})"
    client = rt.datacenter(Priority.WEBHOOK)
    try:
        first = next(client.iter_pages("projects", limit=25))
    except CredentialError as exc:
        fix = "set BITBUCKET_DC_TOKEN (with BITBUCKET_DC_USERNAME for a personal access token)"
        return [(name, False, str(exc), fix)]
    except BitbucketError as exc:
        return [(name, False, str(exc), "check BITBUCKET_DC_URL and the network")]
    visible = f"{len(first.values)}{'+' if first.next_start else ''} projects visible"
    checks = [(name, True, f"accepted ({server.credential_label}), {visible}", "")]
    if server.projects:
        missing = []
        for key in server.projects:
            try:
                client.get_json(f"projects/{quote(key, safe='')}")
            except NotFound:
                missing.append(key)
        checks.append(
            (
                "Data Center projects",
                not missing,
                f"not found or not visible: {', '.join(missing)}" if missing else "all visible",
                "check the keys in BITBUCKET_DC_PROJECTS and the credential's access",
            )
        )
    return checks


def datacenter_budget_line(rt: Runtime) -> str:
    """The Data Center token bucket as `bbsync status` shows it."""
    server = rt.datacenter_settings
    try:
        b = rt.datacenter_budget.snapshot()
    except redis.RedisError as exc:
        return f"budget Data Center: Redis unreachable at REDIS_URL ({type(exc).__name__})"
    line = (
        f"budget Data Center {server.host} ({server.credential_label}): {b.remaining}/{b.limit} "
        f"tokens left, refilled at {server.rate_per_second:g}/s, {b.reserve} reserved for "
        f"webhooks, {b.backfill_remaining} left for backfill"
    )
    if b.paused_until:
        line += f"; PAUSED after a 429 until {b.paused_until.isoformat(timespec='seconds')}"
    return line
