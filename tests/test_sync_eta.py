"""`bbsync sync` says how long the rest takes when the budget, not the machine, is the bound."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from app.bitbucket.budget import BudgetSnapshot
from app.sync.eta import (
    RemainingCalls,
    budget_eta_hours,
    catalog_remaining,
    describe_eta,
    listing_remaining,
)
from bitbucket_sim.testing import SimProcess
from tests.conftest import migrate, run_bbsync


def snapshot(limit: int, used: int, reserve: int, window: int = 3600) -> BudgetSnapshot:
    return BudgetSnapshot(
        limit=limit,
        reserve=reserve,
        used=used,
        remaining=limit - used,
        backfill_remaining=max(0, limit - reserve - used),
        window_seconds=window,
        frees_at=None,
        paused_until=None,
    )


def test_no_eta_when_what_is_left_now_covers_the_rest() -> None:
    api, raw = snapshot(1000, 100, 200), snapshot(5000, 0, 1000)
    assert budget_eta_hours(RemainingCalls(api=700, raw=4000), api, raw) is None
    assert describe_eta(None) == ""


def test_eta_counts_calls_beyond_the_window_at_the_backfill_share() -> None:
    # 10,000 repositories cold: 100 pages + 250 search pages, 8,000 files; nothing spent yet.
    api, raw = snapshot(1000, 0, 200), snapshot(5000, 0, 1000)
    hours = budget_eta_hours(RemainingCalls(api=350, raw=8000), api, raw)
    assert hours is not None and math.isclose(hours, (8000 - 4000) / 4000)
    # Both windows short: their times add up; a 60 s window (benchmarks) scales it down.
    api, raw = snapshot(1000, 800, 200, window=60), snapshot(5000, 4000, 1000, window=60)
    hours = budget_eta_hours(RemainingCalls(api=1600, raw=8000), api, raw)
    assert hours is not None and math.isclose(hours, (2 + 2) * 60 / 3600)
    assert describe_eta(hours) == "budget-bound: about 0.1 h left at the current limits"
    assert budget_eta_hours(RemainingCalls(1, 0), snapshot(10, 0, 10), raw) == math.inf


def test_remaining_calls_follow_the_rate_spent_so_far() -> None:
    assert listing_remaining(seen=2000, total=10000) == RemainingCalls(80, 0)
    assert listing_remaining(seen=10, total=None) == RemainingCalls(0, 0)
    assert catalog_remaining(checked=0, total=500, files_fetched=0, calls=3) == RemainingCalls(
        0, 500
    )
    # 100 checked: 80 files read, 20 other calls → 900 left at the same rate.
    assert catalog_remaining(100, 1000, 80, 100) == RemainingCalls(api=180, raw=720)


def test_sync_paused_by_the_raw_window_says_how_long_the_rest_takes(
    sim_factory: Callable[..., SimProcess], sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=300, access_token="sim-token")
    env = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        # A raw window far smaller than the files to read (but more than a batch of 50
        # repositories needs, so progress is reported before the pause): the budget is the bound.
        "BITBUCKET_RAW_RATE_LIMIT_PER_HOUR": "100",
        "BITBUCKET_RATE_LIMIT_FLOOR": "1",
        "BITBUCKET_LEARN_RATE_LIMIT": "false",
    }
    synced = run_bbsync("sync", env=env, cwd=tmp_path)
    assert synced.returncode == 1, synced.stdout + synced.stderr
    assert "acme: paused, run again to resume" in synced.stderr
    found = re.search(r"acme: budget-bound: about ([0-9.]+) h left", synced.stderr)
    assert found, synced.stderr
    files = sum(len(r["catalog_paths"]) for r in sim.repositories())
    # 80 file reads an hour for backfill (100 less the 20 % reserve), about `files - 80` left.
    assert 0 < float(found.group(1)) <= files / 80
    assert sim.stats()["calls"].get("src", 0) <= 100
