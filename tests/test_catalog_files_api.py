"""`GET /api/catalog-files`: the errors filter returns exactly the files with a parse error or
an entity conflict, on SQLite and PostgreSQL (an empty conflict list is SQL NULL, not JSON
`null`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.runtime import Runtime
from app.sync.workspace import WorkspaceSync
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import api_client


def _files(rt: Runtime, **query: str) -> list[dict[str, Any]]:
    client = api_client(create_app(runtime=rt))
    response = client.get("/api/catalog-files", query_string={"limit": "500", **query})
    assert response.status_code == 200, response.json
    items: list[dict[str, Any]] = response.json["items"]
    return items


def test_errors_filter_returns_only_broken_files(
    sim_factory: Callable[..., SimProcess],
    runtime_for: Callable[..., Runtime],
    migrated_url: str,
) -> None:
    sim = sim_factory(repos=60, seed=4, access_token="sim-token")
    rt = runtime_for(sim, DATABASE_URL=migrated_url, BITBUCKET_RATE_LIMIT_PER_HOUR="100000")
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    malformed = {
        f"acme/{r['slug']}" for r in sim.repositories() if r["catalog_layout"] == "malformed"
    }
    assert malformed, "the seed should give malformed descriptors"
    every = _files(rt)
    broken = _files(rt, errors="1")
    assert len(broken) < len(every)
    assert all(f["parse_error"] or f["entity_conflicts"] for f in broken)
    assert {f["repository"] for f in broken if f["parse_error"]} == malformed
    assert all(f["entity_conflicts"] is None for f in every if f not in broken)
