"""The `bbsync` command in a real process: `sync` with its progress and figures, `status`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bitbucket_sim.testing import SimProcess
from tests.conftest import migrate, run_bbsync

bbsync = run_bbsync


def test_sync_then_status(
    sim_factory: Callable[..., SimProcess], sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=130, access_token="sim-token")
    env = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        "BITBUCKET_RATE_LIMIT_PER_HOUR": "500",
    }
    synced = bbsync("sync", env=env, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert "acme repositories: succeeded" in synced.stdout
    assert "2 calls (seen 130, invalid 0, deleted 0)" in synced.stdout
    catalog_line = next(
        x for x in synced.stdout.splitlines() if x.startswith("acme catalog: succeeded")
    )
    assert "catalog: succeeded" in catalog_line
    assert "candidates 130, checked 130" in catalog_line

    status = bbsync("status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    stats = sim.stats()
    raw_calls = stats["calls"].get("src", 0)
    api_calls = stats["calls_total"] - raw_calls
    # The simulator announces its limits (1,000/h and 5,000/h): they win over the 500 set here,
    # and the reserve keeps its 20 % share; file reads count in the raw window of their own.
    assert f"budget (access_token): {api_calls}/1000 used" in status.stdout
    assert "200 reserved for webhooks" in status.stdout
    assert "limit announced by Bitbucket: 1000" in status.stdout
    assert f"budget raw (access_token): {raw_calls}/5000 used" in status.stdout
    assert "workspace acme: 130 repositories, entities API " in status.stdout
    assert ", Component " in status.stdout and ", Group " in status.stdout
    assert "  last repositories sync succeeded" in status.stdout
    assert "  last catalog sync succeeded" in status.stdout
    assert "catalog files cannot be used:" in status.stdout  # the simulator's malformed ones
    assert "sim-token" not in status.stdout + status.stderr + synced.stdout + synced.stderr


def test_sync_reports_a_refused_credential_and_fails(
    sim: SimProcess, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    env = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "wrong-token",
    }
    result = bbsync("sync", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "acme: failed: GET repositories/acme: HTTP 401" in result.stderr
    status = bbsync("status", env=env, cwd=tmp_path)
    assert "  last repositories sync failed" in status.stdout
    assert "HTTP 401" in status.stdout


def test_status_says_what_to_do_when_the_database_is_not_migrated(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": sqlite_url, "REDIS_URL": redis_url, "BITBUCKET_WORKSPACES": "acme"}
    result = bbsync("status", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "alembic upgrade head" in result.stderr
