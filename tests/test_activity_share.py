"""Scheduled activity reconciliation spends within its share and on change first: repositories
whose `updated_on` moved or that got deliveries come before the quiet ones, and the quiet ones
are swept oldest first (never reconciled, then open pull requests, then the rest). Live
simulator, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.models import PullRequest, Repository, WebhookDelivery, utcnow
from app.runtime import Runtime
from app.sync.activity import (
    ActivityReconcile,
    activity_call_cap,
    activity_coverage,
    activity_quiet_calls_left,
)
from app.sync.workspace import WorkspaceSync
from bitbucket_sim.testing import SimProcess


def _reconcile(
    rt: Runtime, max_calls: int | None, max_quiet_calls: int | None = None
) -> tuple[set[str], int, dict[str, int]]:
    """Slugs reconciled by one run, the calls it spent, and its counts."""
    with rt.sessions() as session:
        before = {r.slug: r.activity_reconciled_at for r in session.scalars(select(Repository))}
        client = rt.bitbucket()
        run = ActivityReconcile(
            client, session, session.commit, max_calls=max_calls, max_quiet_calls=max_quiet_calls
        ).run("acme")
        after = {r.slug: r.activity_reconciled_at for r in session.scalars(select(Repository))}
        counts = dict(run.counts or {})
    touched = {slug for slug, at in after.items() if at != before.get(slug)}
    return touched, client.ledger.total, counts


def _next_quiet(rt: Runtime, n: int) -> set[str]:
    """The quiet sweep's next picks: open pull requests first, then oldest first."""
    with rt.sessions() as session:
        with_open = set(
            session.scalars(select(PullRequest.repository_id).where(PullRequest.state == "OPEN"))
        )
        rows = session.scalars(select(Repository)).all()
        epoch = datetime.min.replace(tzinfo=UTC)
        rows = sorted(
            rows,
            key=lambda r: (
                r.activity_reconciled_at is not None,
                r.id not in with_open,
                r.activity_reconciled_at or epoch,
            ),
        )
        return {r.slug for r in rows[:n]}


def test_changed_repositories_first_then_the_quiet_ones_oldest_first(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], migrated_url: str
) -> None:
    sim = sim_factory(repos=24, seed=3, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=migrated_url, BITBUCKET_RATE_LIMIT_PER_HOUR="100000")

    def listing() -> None:
        with rt.sessions() as session:
            WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")

    listing()
    everything, _, first = _reconcile(rt, None)
    assert len(everything) == 24 and first["deferred"] == 0

    slugs = [r["slug"] for r in sim.repositories()]
    pushed = set(slugs[5:8])
    for slug in pushed:
        sim.admin("POST", f"repos/{slug}/push", json={"files": {"README.md": "changed"}})
    listing()  # the hourly listing sees `updated_on` move
    with rt.sessions() as session:
        # A delivery seen for a quiet repository since its reconciliation counts as change too.
        session.add(
            WebhookDelivery(
                request_uuid=str(uuid.uuid4()),
                event_key="pullrequest:approved",
                repository_full_name=f"acme/{slugs[20]}",
                received_at=utcnow(),
            )
        )
        session.commit()
    changed = pushed | {slugs[20]}
    backlog = set(slugs[10:13])  # never reconciled (new, or a cold start): after the changes
    with rt.sessions() as session:
        for repo in session.scalars(select(Repository).where(Repository.slug.in_(backlog))):
            repo.activity_reconciled_at = None
        session.commit()

    reconciled: set[str] = set()
    while reconciled != changed:
        touched, spent, counts = _reconcile(rt, max_calls=8)
        assert spent <= 8
        assert touched, "every run within its share reconciles something"
        assert touched <= changed - reconciled, "a quiet repository went before a changed one"
        assert counts["changed"] == len(touched) and counts["deferred"] > 0
        reconciled |= touched

    # Nothing is changed any more: the never-reconciled backlog, then the oldest first.
    touched, _, _ = _reconcile(rt, max_calls=9)
    assert touched == backlog
    for _ in range(3):
        expected = _next_quiet(rt, 2)
        touched, spent, counts = _reconcile(rt, max_calls=6)
        assert touched == expected and spent <= 6 and counts["changed"] == 0


def test_the_share_and_the_coverage_follow_the_settings(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    from tests.conftest import migrate

    migrate(sqlite_url)
    sim = sim_factory(repos=10, seed=3, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=sqlite_url)
    settings = rt.settings
    assert (settings.rate_limit_per_hour, settings.activity_share) == (1000, 0.15)
    assert settings.activity_interval_seconds == 900
    assert activity_call_cap(settings) == 37  # 150 calls an hour, four runs an hour
    doubled = replace(settings, activity_interval_seconds=1800)
    assert activity_call_cap(doubled) == 75
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, settings).run("acme")
        cold = activity_coverage(session, "acme", settings)
    assert cold.repositories == 10 and cold.never_reconciled == 10 and cold.oldest is None
    # 10 repositories x 3 calls / 50 calls an hour (the quiet sweep's 5 %)
    assert cold.sweep_hours == pytest.approx(0.6)
    _reconcile(rt, None)
    with rt.sessions() as session:
        warm = activity_coverage(session, "acme", settings)
    assert warm.never_reconciled == 0 and warm.oldest is not None


def test_the_quiet_sweep_spends_only_its_share_and_changes_the_rest(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], migrated_url: str
) -> None:
    sim = sim_factory(repos=24, seed=3, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=migrated_url)
    settings = rt.settings
    assert settings.activity_sweep_share == 0.05
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, settings).run("acme")
        # Never reconciled is no sign of change: the cold backlog goes at the sweep's pace.
        assert activity_quiet_calls_left(session, "acme", settings) == 12  # 50 an hour / 4
    touched, _, counts = _reconcile(rt, max_calls=37, max_quiet_calls=12)
    assert len(touched) <= 4 and counts["quiet_calls"] <= 12 and counts["deferred"] >= 20
    _reconcile(rt, None)  # all reconciled once
    slugs = [r["slug"] for r in sim.repositories()]
    pushed = set(slugs[:6])
    for slug in pushed:
        sim.admin("POST", f"repos/{slug}/push", json={"files": {"README.md": "changed"}})
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, settings).run("acme")
    touched, spent, counts = _reconcile(rt, max_calls=37, max_quiet_calls=6)
    assert pushed <= touched, "a change waited behind the quiet share"
    assert counts["changed"] == 6 and counts["quiet_calls"] <= 6
    assert 0 < len(touched - pushed) <= 2 and spent <= 37
    with rt.sessions() as session:
        # The uncapped run above (as `bbsync sync --activity`) spent more than the window's 50.
        assert activity_quiet_calls_left(session, "acme", settings) == 0
