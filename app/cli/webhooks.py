"""`bbsync webhooks …` and `bbsync deliveries …`: installing the webhook, and seeing and
retrying what Bitbucket delivered."""

from __future__ import annotations

import sys

import click
from sqlalchemy import select, update

from app.bitbucket.budget import Priority
from app.bitbucket.errors import BitbucketError
from app.models import DeliveryStatus, Repository, WebhookDelivery, Workspace
from app.runtime import Runtime
from app.sync.datacenter import is_datacenter_workspace, workspace_key
from app.sync.hooks import DataCenterWebhookInstaller, WebhookInstaller
from app.task_names import PROCESS_DELIVERY, enqueue_safely, producer


def _repositories(rt: Runtime, workspace: str) -> list[str]:
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(Repository.slug)
                .join(Workspace, Repository.workspace_id == Workspace.id)
                .where(Workspace.slug == workspace, Repository.deleted_at.is_(None))
                .order_by(Repository.slug)
            )
        )


@click.group()
def webhooks() -> None:
    """The Bitbucket webhook that makes bbsync real-time."""


CLOUD_ROUTE = "/webhooks/bitbucket"
DC_ROUTE = "/webhooks/bitbucket-dc"


def _routes(url: str) -> tuple[str, str]:
    """The Cloud and Data Center URLs of bbsync's ingress, from either one."""
    base = url.rstrip("/")
    for route in (DC_ROUTE, CLOUD_ROUTE):
        if base.endswith(route):
            base = base.removesuffix(route)
            break
    return base + CLOUD_ROUTE, base + DC_ROUTE


def _cloud_workspaces(rt: Runtime, chosen: tuple[str, ...]) -> list[str]:
    if chosen:
        return [w for w in chosen if not is_datacenter_workspace(w)]
    return list(rt.settings.workspaces)


def _dc_projects(rt: Runtime, chosen: tuple[str, ...]) -> list[tuple[str, str]]:
    """`(project key, workspace)` of the Data Center projects to hook (none without a Data
    Center source); `chosen` names Cloud workspaces or `{host}/{KEY}` workspaces."""
    if rt.settings.datacenter is None:
        return []
    server = rt.datacenter_settings
    client = rt.datacenter(Priority.WEBHOOK)
    keys = [str(p["key"]) for p in client.projects(server.projects) if isinstance(p, dict)]
    projects = [(key, workspace_key(server, key)) for key in keys]
    return [(k, ws) for k, ws in projects if not chosen or ws in chosen]


@webhooks.command("install")
@click.option(
    "--url",
    required=True,
    help="Public URL of POST /webhooks/bitbucket (Data Center hooks get /webhooks/bitbucket-dc).",
)
@click.option("--workspace", "-w", "chosen", multiple=True, help="Only this workspace.")
@click.pass_obj
def install(rt: Runtime, url: str, chosen: tuple[str, ...]) -> None:
    """Create or update the webhook (workspace-wide, or per repository when the credential
    cannot manage workspace hooks) with the secret and the events bbsync handles; on Data
    Center, per project (per repository where the server has no project hooks)."""
    if not url.startswith(("https://", "http://")) or not url.rstrip("/").endswith(
        (CLOUD_ROUTE, DC_ROUTE)
    ):
        raise click.BadParameter(
            "must be the full URL ending in /webhooks/bitbucket (or /webhooks/bitbucket-dc)",
            param_hint="--url",
        )
    cloud_url, dc_url = _routes(url)
    secrets = rt.settings.webhook_secrets
    if not secrets:
        raise click.UsageError("set BITBUCKET_WEBHOOK_SECRET first: hooks are always signed")
    failed = False
    workspaces = _cloud_workspaces(rt, chosen)
    if workspaces:
        installer = WebhookInstaller(rt.bitbucket(Priority.WEBHOOK), secrets[0].reveal())
    for workspace in workspaces:
        try:
            for report in installer.install(workspace, cloud_url, _repositories(rt, workspace)):
                click.echo(report.line())
        except BitbucketError as exc:
            failed = True
            click.echo(f"workspace {workspace}: failed: {exc}", err=True)
    try:
        projects = _dc_projects(rt, chosen)
    except BitbucketError as exc:
        failed, projects = True, []
        click.echo(f"Data Center projects: failed: {exc}", err=True)
    if projects:
        dc = DataCenterWebhookInstaller(rt.datacenter(Priority.WEBHOOK), secrets[0].reveal())
    for key, workspace in projects:
        try:
            for report in dc.install(key, dc_url, _repositories(rt, workspace)):
                click.echo(report.line())
        except BitbucketError as exc:
            failed = True
            click.echo(f"project {key}: failed: {exc}", err=True)
    if failed:
        sys.exit(1)


@webhooks.command("status")
@click.option("--url", default=None, help="The URL the hook should point at.")
@click.option("--workspace", "-w", "chosen", multiple=True, help="Only this workspace.")
@click.pass_obj
def hook_status(rt: Runtime, url: str | None, chosen: tuple[str, ...]) -> None:
    """List bbsync's hooks and flag drift (URL, events, inactive, no secret)."""
    cloud_url, dc_url = _routes(url) if url else (None, None)
    installer = WebhookInstaller(rt.bitbucket(Priority.WEBHOOK), None)
    healthy = True
    for workspace in _cloud_workspaces(rt, chosen):
        try:
            reports = installer.status(workspace, cloud_url, _repositories(rt, workspace))
        except BitbucketError as exc:
            healthy = False
            click.echo(f"workspace {workspace}: unknown: {exc}", err=True)
            continue
        for report in reports:
            healthy &= report.action == "ok"
            click.echo(report.line())
    try:
        projects = _dc_projects(rt, chosen)
    except BitbucketError as exc:
        healthy, projects = False, []
        click.echo(f"Data Center projects: unknown: {exc}", err=True)
    if projects:
        dc = DataCenterWebhookInstaller(rt.datacenter(Priority.WEBHOOK), None)
    for key, workspace in projects:
        try:
            dc_reports = dc.status(key, dc_url, _repositories(rt, workspace))
        except BitbucketError as exc:
            healthy = False
            click.echo(f"project {key}: unknown: {exc}", err=True)
            continue
        for report in dc_reports:
            healthy &= report.action == "ok"
            click.echo(report.line())
    if not healthy:
        sys.exit(1)


@click.group(invoke_without_command=True)
@click.option("--failed", is_flag=True, help="Only failed deliveries.")
@click.option("--limit", default=20, show_default=True)
@click.pass_context
def deliveries(ctx: click.Context, failed: bool, limit: int) -> None:
    """Recent webhook deliveries, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    rt: Runtime = ctx.obj
    stmt = select(WebhookDelivery).order_by(WebhookDelivery.received_at.desc()).limit(limit)
    if failed:
        stmt = stmt.where(WebhookDelivery.status == DeliveryStatus.FAILED.value)
    with rt.sessions() as session:
        shown = list(session.scalars(stmt))
        if not shown:
            click.echo("no failed deliveries" if failed else "no deliveries received yet")
        for d in shown:
            line = (
                f"#{d.id} {d.received_at.isoformat(timespec='seconds')} {d.event_key} "
                f"{d.repository_full_name or '-'} {d.status}"
            )
            if d.processing_ms is not None:
                line += f" in {d.processing_ms} ms"
            if d.error:
                line += f": {d.error}"
            click.echo(line)


@deliveries.command("retry")
@click.option("--id", "ids", multiple=True, type=int, help="This delivery (repeatable).")
@click.option("--failed", is_flag=True, help="Every failed delivery.")
@click.pass_obj
def retry(rt: Runtime, ids: tuple[int, ...], failed: bool) -> None:
    """Process deliveries again (processing is idempotent)."""
    if not ids and not failed:
        raise click.UsageError("name deliveries with --id or use --failed")
    condition = (
        WebhookDelivery.status == DeliveryStatus.FAILED.value
        if failed
        else WebhookDelivery.id.in_(ids)
    )
    with rt.sessions.begin() as session:
        chosen = list(session.scalars(select(WebhookDelivery.id).where(condition)))
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(chosen))
            .values(status=DeliveryStatus.PENDING.value, error=None)
        )
    app = producer(rt.settings.broker_url)
    queued = sum(enqueue_safely(app, PROCESS_DELIVERY, delivery_id) for delivery_id in chosen)
    click.echo(
        f"{len(chosen)} deliveries set to pending; {queued} queued now"
        + ("" if queued == len(chosen) else " (the rest go with the next requeue)")
    )
