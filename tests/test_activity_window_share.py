"""Activity reconciliation stays within its share of the window however many runs start in
it: retries after a budget pause and beat's runs queued behind a busy worker each used to get
a fresh per-run cap (measured by `bench.steady_state`: 323 calls an hour against a 150 share
at 10,000 repositories). Live simulator; SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from app.runtime import Runtime
from app.sync.activity import (
    CALLS_PER_REPOSITORY,
    ActivityReconcile,
    activity_call_cap,
    activity_calls_left,
)
from app.sync.workspace import WorkspaceSync
from bitbucket_sim.testing import SimProcess


def test_runs_in_one_window_share_it_instead_of_each_taking_a_cap(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], migrated_url: str
) -> None:
    sim = sim_factory(repos=80, seed=5, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=migrated_url)
    settings = rt.settings
    share = int(settings.rate_limit_per_hour * settings.activity_share)  # 150
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, settings).run("acme")
    sim.reset_stats()
    caps, spent = [], 0
    for _ in range(6):  # six runs in one window: more than the four beat sends
        with rt.sessions() as session:
            cap = activity_calls_left(session, "acme", settings)
            caps.append(cap)
            client = rt.bitbucket()
            ActivityReconcile(client, session, session.commit, max_calls=cap).run("acme")
            spent += client.ledger.total
    assert caps[0] == activity_call_cap(settings) == 37
    assert caps[-1] < CALLS_PER_REPOSITORY, caps  # not one more repository this window
    # A run may pass its cap by one call (a repository's first branch lookup), no more.
    assert share - activity_call_cap(settings) <= spent <= share + len(caps), (spent, caps)
    stats = sim.stats()["calls"]
    activity_calls = sum(stats.get(f, 0) for f in ("pullrequests", "pipelines", "statuses", "refs"))
    assert activity_calls == spent
