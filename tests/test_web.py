"""The Flask side: health and readiness, the budget API, metrics, the catalog endpoints, and
JSON errors at the edge."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import yaml
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, select
from werkzeug.test import TestResponse

from app.bitbucket.accounting import CallLedger
from app.bitbucket.budget import Priority
from app.catalog.entities import BuiltEntity, built
from app.db import session_scope
from app.models import CatalogEntity, EntitySource, SyncRun
from app.runtime import Runtime
from app.sync.entity_writer import EntityWriter
from app.web import create_app
from tests.conftest import api_client, migrate


def client_for(rt: Runtime) -> FlaskClient:
    client: FlaskClient = api_client(create_app(runtime=rt))
    return client


def test_liveness_answers_without_touching_anything(runtime_for: Callable[..., Runtime]) -> None:
    rt = runtime_for(
        DATABASE_URL="sqlite:////nonexistent/dir/x.db", REDIS_URL="redis://127.0.0.1:1/0"
    )
    response = client_for(rt).get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_ready_when_database_and_redis_answer(
    runtime_for: Callable[..., Runtime], postgres_url: str
) -> None:
    rt = runtime_for(DATABASE_URL=postgres_url)
    response = client_for(rt).get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.json["checks"] == {"database": "ok", "redis": "ok", "spool": 0}


def test_ready_means_a_delivery_can_be_taken(runtime_for: Callable[..., Runtime]) -> None:
    # Redis down, database up: deliveries are still stored; Redis is reported degraded.
    rt = runtime_for(REDIS_URL="redis://127.0.0.1:1/0")
    response = client_for(rt).get("/readyz")
    assert response.status_code == 200
    assert (response.json["status"], response.json["deliveries"]) == ("degraded", "stored")
    assert response.json["checks"]["redis"].startswith("degraded: unreachable")

    # Database down, Redis up: deliveries wait in the Redis spool.
    rt = runtime_for(DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    response = client_for(rt).get("/readyz")
    assert response.status_code == 200
    assert (response.json["status"], response.json["deliveries"]) == ("degraded", "spooled")
    assert "unreachable" in response.json["checks"]["database"]

    # Neither: a load balancer must send deliveries elsewhere.
    rt = runtime_for(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/none", REDIS_URL="redis://127.0.0.1:1/0"
    )
    response = client_for(rt).get("/readyz")
    assert response.status_code == 503
    assert (response.json["status"], response.json["deliveries"]) == ("unavailable", "refused")

    # Database down and the spool switched off: nowhere to keep a delivery.
    rt = runtime_for(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/none", BBSYNC_SPOOL_MAX_ENTRIES="0"
    )
    assert client_for(rt).get("/readyz").status_code == 503


def test_budget_api_shows_used_reserved_remaining_and_when_it_frees(
    runtime_for: Callable[..., Runtime],
) -> None:
    rt = runtime_for(BITBUCKET_RATE_LIMIT_PER_HOUR="50")
    for _ in range(5):
        rt.budget.acquire(Priority.BACKFILL)
    body = client_for(rt).get("/api/budget").json
    assert body["limit"] == 50
    assert body["reserve"] == 10
    assert body["used"] == 5
    assert body["remaining"] == 45
    assert body["backfill_remaining"] == 35
    assert body["frees_at"] is not None
    assert body["paused_until"] is None
    assert body["credential"] == "access_token"

    rt.budget.pause(retry_after=60)
    assert client_for(rt).get("/api/budget").json["paused_until"] is not None


def test_budget_api_says_503_when_redis_is_down(runtime_for: Callable[..., Runtime]) -> None:
    rt = runtime_for(REDIS_URL="redis://127.0.0.1:1/0")
    response = client_for(rt).get("/api/budget")
    assert response.status_code == 503
    assert response.json["error"] == "redis_unavailable"


def test_metrics_expose_calls_budget_entities_and_runs(
    runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    rt = runtime_for()
    ledger = CallLedger(rt.redis)
    ledger.record("repositories", 200)
    ledger.record("repositories", 200)
    ledger.record("src", 429)
    rt.budget.acquire()
    with session_scope(rt.sessions) as session:
        session.add(SyncRun(kind="repositories", workspace="acme", status="succeeded"))
        session.add(_entity("component:default/a", "Component"))
    text = client_for(rt).get("/metrics").get_data(as_text=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[("bbsync_bitbucket_calls_total", (("family", "repositories"), ("status", "200")))]
        == 2
    )
    assert samples[("bbsync_bitbucket_calls_total", (("family", "src"), ("status", "429")))] == 1
    assert samples[("bbsync_budget_used", (("resource", "repositories"),))] == 1
    assert samples[("bbsync_budget_used", (("resource", "raw"),))] == 0
    assert samples[("bbsync_budget_limit", (("resource", "raw"),))] == 5000
    assert samples[("bbsync_catalog_entities", (("kind", "Component"),))] == 1
    assert (
        samples[("bbsync_sync_runs_total", (("kind", "repositories"), ("status", "succeeded")))]
        == 1
    )


def _entity(ref: str, kind: str) -> CatalogEntity:
    name = ref.split("/")[-1]
    body = {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {},
    }
    return CatalogEntity(
        entity_ref=ref,
        kind=kind,
        namespace="default",
        name=name,
        body=body,
        content_hash=hashlib.sha256(repr(body).encode()).hexdigest(),
    )


def test_catalog_serves_entities_as_yaml_with_etag_and_304(
    runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    rt = runtime_for()
    with session_scope(rt.sessions) as session:
        session.add(_entity("component:default/billing", "Component"))
        session.add(_entity("group:default/payments", "Group"))
    client = client_for(rt)
    response = client.get("/catalog/entities.yaml")
    assert response.status_code == 200
    documents = list(yaml.safe_load_all(response.get_data(as_text=True)))
    assert [d["metadata"]["name"] for d in documents] == ["billing", "payments"]
    etag = response.headers["ETag"]
    again = client.get("/catalog/entities.yaml", headers={"If-None-Match": etag})
    assert again.status_code == 304
    with session_scope(rt.sessions) as session:
        session.add(_entity("component:default/ledger", "Component"))
    changed = client.get("/catalog/entities.yaml", headers={"If-None-Match": etag})
    assert changed.status_code == 200


def test_catalog_json_filters_and_pages(
    runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    rt = runtime_for()
    with session_scope(rt.sessions) as session:
        for i in range(3):
            session.add(_entity(f"component:default/c{i}", "Component"))
        session.add(_entity("group:default/g", "Group"))
    client = client_for(rt)
    page = client.get("/catalog/entities?kind=component&limit=2").json
    assert [e["metadata"]["name"] for e in page["items"]] == ["c0", "c1"]
    assert page["next_offset"] == 2
    rest = client.get("/catalog/entities?kind=component&limit=2&offset=2").json
    assert [e["metadata"]["name"] for e in rest["items"]] == ["c2"]
    assert rest["next_offset"] is None
    bad = client.get("/catalog/entities?limit=0")
    assert bad.status_code == 400
    assert "limit" in bad.json["fields"]


def test_unknown_paths_get_a_json_error(runtime_for: Callable[..., Runtime]) -> None:
    response = client_for(runtime_for()).get("/nope")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"


def test_catalog_json_answers_304_while_nothing_changed(
    runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    rt = runtime_for()
    with session_scope(rt.sessions) as session:
        session.add(_entity("component:default/a", "Component"))
    client = client_for(rt)
    first = client.get("/catalog/entities?kind=Component")
    etag = first.headers["ETag"]
    assert (
        client.get("/catalog/entities?kind=Component", headers={"If-None-Match": etag}).status_code
        == 304
    )
    # Another query is another resource: its ETag differs.
    assert client.get("/catalog/entities?kind=Group").headers["ETag"] != etag
    with session_scope(rt.sessions) as session:
        entity = session.scalars(select(CatalogEntity)).one()
        entity.content_hash = "changed"
    assert (
        client.get("/catalog/entities?kind=Component", headers={"If-None-Match": etag}).status_code
        == 200
    )


def _component(name: str, description: str = "") -> BuiltEntity:
    return built(
        {
            "apiVersion": "backstage.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name, "description": description},
            "spec": {"type": "service", "lifecycle": "production", "owner": "group:default/a"},
        }
    )


def _write(rt: Runtime, **descriptions: str) -> None:
    with rt.sessions() as session:
        writer = EntityWriter(session, "acme")
        for name, description in descriptions.items():
            writer.write(_component(name, description), EntitySource.GENERATED)
        session.commit()


def _descriptions(response: TestResponse) -> dict[str, str]:
    if response.mimetype == "application/yaml":
        bodies = list(yaml.safe_load_all(response.get_data(as_text=True)))
    else:
        bodies = response.json["items"]
    return {b["metadata"]["name"]: b["metadata"]["description"] for b in bodies}


def test_catalog_etags_follow_entity_content_and_a_304_loads_no_body(
    runtime_for: Callable[..., Runtime], migrated_url: str
) -> None:
    rt = runtime_for(DATABASE_URL=migrated_url)
    _write(rt, billing="", ledger="v0")
    client = client_for(rt)
    statements: list[str] = []

    @event.listens_for(rt.engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    # The whole catalog, a filtered list, and a page holding only `ledger`.
    paths = ["/catalog/entities.yaml", "/catalog/entities?kind=Component"]
    paths.append("/catalog/entities?limit=1&offset=1")
    for version, path in enumerate(paths, start=1):
        first = client.get(path)
        assert first.status_code == 200
        assert _descriptions(first)["ledger"] == f"v{version - 1}"
        etag = first.headers["ETag"]
        _write(rt, ledger=f"v{version - 1}")  # written again, unchanged
        statements.clear()
        unchanged = client.get(path, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304, path
        assert unchanged.headers["ETag"] == first.headers["ETag"]
        # The 304 read references and hashes: no statement selected an entity's body.
        assert statements and not [s for s in statements if "catalog_entities.body" in s]
        _write(rt, ledger=f"v{version}")
        changed = client.get(path, headers={"If-None-Match": etag})
        assert changed.status_code == 200, path
        assert changed.headers["ETag"] != etag
        assert _descriptions(changed)["ledger"] == f"v{version}"
        assert any("catalog_entities.body" in s for s in statements)


def test_a_catalog_page_etag_changes_when_a_next_page_appears(
    runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    rt = runtime_for()
    _write(rt, a="", b="")
    client = client_for(rt)
    first = client.get("/catalog/entities?limit=2")
    assert first.json["next_offset"] is None
    _write(rt, c="")  # after the page: its items are the same, its next_offset is not
    etag = first.headers["ETag"]
    again = client.get("/catalog/entities?limit=2", headers={"If-None-Match": etag})
    assert again.status_code == 200
    assert again.json["next_offset"] == 2
