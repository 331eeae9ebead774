"""`bbsync sync` and `bbsync status` with only Data Center settings, in a real process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bitbucket_sim.testing import SimProcess
from tests.conftest import migrate, run_bbsync


def test_data_center_alone_syncs_then_shows_its_budget_and_projects(
    sim_factory: Callable[..., SimProcess], sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(
        flavor="datacenter", repos=20, seed=4, username="jdoe", api_token="pat-secret-1"
    )
    env = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_DC_URL": sim.url,
        "BITBUCKET_DC_USERNAME": "jdoe",
        "BITBUCKET_DC_TOKEN": "pat-secret-1",
        "BITBUCKET_DC_RATE_PER_SECOND": "500",
        "BITBUCKET_DC_BURST": "50",
    }
    synced = run_bbsync("sync", env=env, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    host = sim.url.split("://", 1)[1]
    keys = sorted({r["project_key"] for r in sim.repositories()})
    for key in keys:
        assert f"{host}/{key} repositories: succeeded" in synced.stdout
        assert f"{host}/{key} catalog: succeeded" in synced.stdout
    assert sim.stats()["calls_total"] >= 1 + len(keys) + 2 * 20

    status = run_bbsync("status", env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"budget Data Center {host} (personal access token of jdoe (Basic)):" in status.stdout
    assert "refilled at 500/s, 10 reserved for webhooks" in status.stdout
    for key in keys:
        assert f"workspace {host}/{key}: " in status.stdout
    assert "entities Component " in status.stdout and ", Group " in status.stdout
    assert "budget (anonymous)" not in status.stdout  # no Cloud source: no Cloud budget
    outputs = status.stdout + status.stderr + synced.stdout + synced.stderr
    assert "pat-secret-1" not in outputs

    people = run_bbsync("sync", "--members", env=env, cwd=tmp_path)
    assert people.returncode == 0, people.stderr
    assert f"{host} members: succeeded" in people.stdout
    assert "only the catalog sync" not in people.stderr


def test_no_source_at_all_is_a_usage_error(sqlite_url: str, tmp_path: Path) -> None:
    result = run_bbsync("sync", env={"DATABASE_URL": sqlite_url}, cwd=tmp_path)
    assert result.returncode == 2
    assert "set BITBUCKET_WORKSPACES (or BITBUCKET_DC_URL)" in result.stderr


def test_config_shows_the_data_center_source_and_hides_its_token(tmp_path: Path) -> None:
    env = {
        "BITBUCKET_DC_URL": "https://bitbucket.example.com",
        "BITBUCKET_DC_TOKEN": "dc-very-secret",
        "BITBUCKET_DC_PROJECTS": "plat,core",
    }
    result = run_bbsync("config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "BITBUCKET_DC_URL: https://bitbucket.example.com" in result.stdout
    assert "Data Center credential: HTTP access token (Bearer)" in result.stdout
    assert "BITBUCKET_DC_PROJECTS: PLAT,CORE" in result.stdout
    assert "dc-very-secret" not in result.stdout + result.stderr


def test_a_bad_data_center_setting_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    result = run_bbsync(
        "status", env={"BITBUCKET_DC_URL": "https://h.example/rest/api/latest"}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "BITBUCKET_DC_URL:" in result.stderr


def test_doctor_checks_the_data_center_credential_and_projects(
    sim_factory: Callable[..., SimProcess], sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(flavor="datacenter", repos=20, seed=4, access_token="dc-token")
    key = sim.repositories()[0]["project_key"]
    env = {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_DC_URL": sim.url,
        "BITBUCKET_DC_TOKEN": "dc-token",
        "BITBUCKET_DC_PROJECTS": f"{key},NOSUCH",
    }
    host = sim.url.split("://", 1)[1]
    result = run_bbsync("doctor", env=env, cwd=tmp_path)
    assert f"ok   Data Center credential ({host}): accepted (HTTP access token (Bearer))" in (
        result.stdout
    )
    assert "FAIL Data Center projects: not found or not visible: NOSUCH" in result.stdout
    assert "FAIL workspaces" not in result.stdout  # Data Center alone needs no Cloud workspace
    assert result.returncode == 1

    refused = run_bbsync(
        "doctor", env={**env, "BITBUCKET_DC_TOKEN": "wrong-dc-token"}, cwd=tmp_path
    )
    assert f"FAIL Data Center credential ({host}): GET projects: HTTP 401" in refused.stdout
    assert "fix: set BITBUCKET_DC_TOKEN" in refused.stdout
    assert "wrong-dc-token" not in refused.stdout + refused.stderr
