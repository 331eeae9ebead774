"""`bbsync doctor` names what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path

from bitbucket_sim.testing import SimProcess
from tests.conftest import migrate, run_bbsync


def env_for(sim: SimProcess, sqlite_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "BITBUCKET_API_URL": sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        **extra,
    }


def test_a_healthy_setup_passes_but_for_the_missing_webhook(
    sim: SimProcess, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    result = run_bbsync("doctor", env=env_for(sim, sqlite_url, redis_url), cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert "ok   redis: reachable" in lines
    assert any(line.startswith("ok   database: migrated to") for line in lines)
    assert "ok   credential (acme): accepted" in lines
    assert "ok   members (acme): readable" in lines
    assert any(
        line.startswith("FAIL webhook (acme)") and "bbsync webhooks install" in line
        for line in lines
    )
    assert result.returncode == 1


def test_doctor_reports_a_wrong_token_a_missing_scope_and_an_unmigrated_database(
    sim: SimProcess, sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    wrong = run_bbsync(
        "doctor",
        env=env_for(sim, sqlite_url, redis_url, BITBUCKET_ACCESS_TOKEN="wrong"),
        cwd=tmp_path,
    )
    assert wrong.returncode == 1
    assert "FAIL database: not migrated (at nothing" in wrong.stdout
    assert "fix: run `alembic upgrade head`" in wrong.stdout
    assert "FAIL credential (acme): GET workspaces/acme: HTTP 401" in wrong.stdout
    assert "fix: set a valid token" in wrong.stdout
    assert "wrong" not in wrong.stdout.replace("wrong token", "")

    migrate(sqlite_url)
    sim.admin("POST", "faults", json={"status": 403, "times": 1, "path_contains": "/members"})
    scoped = run_bbsync("doctor", env=env_for(sim, sqlite_url, redis_url), cwd=tmp_path)
    assert (
        "FAIL members (acme): refused (HTTP 403) — fix: give the token the scope "
        "read:workspace:bitbucket" in scoped.stdout
    )
