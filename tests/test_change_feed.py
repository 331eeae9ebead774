"""`GET /catalog/changes`: a Backstage provider that applies every page it is given ends with
exactly the live catalog, on SQLite and PostgreSQL, across syncs, webhook events, paging,
retention (410), bad queries (400) and writers committing while it reads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

from app.catalog.changes import prune_changes, retire_entities
from app.catalog.entities import LOCATION, ORIGIN_LOCATION, PROJECT_SLUG, built
from app.catalog.feed import backstage_ref
from app.models import CatalogChange, CatalogEntity, EntitySource, utcnow
from app.runtime import Runtime
from app.sync.entity_writer import EntityWriter
from app.sync.workspace import WorkspaceSync
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import api_client
from tests.test_events import process
from tests.webhook_support import repository

RuntimeFactory = Callable[..., Runtime]


def component(name: str, description: str = "") -> Any:
    body = {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "description": description},
        "spec": {"type": "service", "lifecycle": "production", "owner": "group:default/a"},
    }
    return built(body)


def ref_of(body: dict[str, Any]) -> str:
    meta = body["metadata"]
    return backstage_ref(body["kind"], meta.get("namespace", "default"), meta["name"])


class Mirror:
    """What a Backstage entity provider holds: it applies `added` and `removed` in order."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.cursor = "0"
        self.entities: dict[str, dict[str, Any]] = {}

    def page(self, limit: int) -> dict[str, Any]:
        response = self.client.get(f"/catalog/changes?since={self.cursor}&limit={limit}")
        assert response.status_code == 200, response.json
        page: dict[str, Any] = response.json
        for body in page["added"]:
            self.entities[ref_of(body)] = body
        for ref in page["removed"]:
            self.entities.pop(ref, None)
        self.cursor = page["cursor"]
        return page

    def drain(self, limit: int = 500) -> list[dict[str, Any]]:
        pages = [self.page(limit)]
        while pages[-1]["more"]:
            pages.append(self.page(limit))
        return pages


def live(rt: Runtime) -> dict[str, dict[str, Any]]:
    client = api_client(create_app(runtime=rt))
    items = client.get("/catalog/entities?limit=5000").json["items"]
    return {ref_of(body): body for body in items}


def feed_client(rt: Runtime) -> FlaskClient:
    client: FlaskClient = api_client(create_app(runtime=rt))
    return client


def write(rt: Runtime, *names: str, description: str = "") -> None:
    with rt.sessions() as session:
        writer = EntityWriter(session, "acme")
        for name in names:
            writer.write(component(name, description), EntitySource.GENERATED)
        session.commit()


def retire(rt: Runtime, *names: str) -> None:
    with rt.sessions() as session:
        retire_entities(session, CatalogEntity.name.in_(names))
        session.commit()


@pytest.fixture
def rt(runtime_for: RuntimeFactory, migrated_url: str) -> Runtime:
    return runtime_for(DATABASE_URL=migrated_url)


def test_a_sync_and_webhook_events_reach_a_provider_in_order(
    sim: SimProcess, runtime_for: RuntimeFactory, migrated_url: str
) -> None:
    rt = runtime_for(sim, DATABASE_URL=migrated_url)
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    mirror = Mirror(feed_client(rt))
    pages = mirror.drain(limit=7)
    assert len(pages) > 3 and all(len(p["added"]) <= 7 for p in pages)
    assert all(p["removed"] == [] for p in pages)  # a start from 0 carries no old deletions
    assert mirror.entities == live(rt)
    for body in mirror.entities.values():
        annotations = body["metadata"]["annotations"]
        assert annotations[LOCATION] == annotations[ORIGIN_LOCATION]
        assert annotations[LOCATION].startswith(("url:https://bitbucket.org/acme/", "bbsync:"))

    repos = sim.repositories()
    single = next(r for r in repos if r["catalog_layout"] == "single")
    descriptor = next(
        b
        for b in mirror.entities.values()
        if b["metadata"]["annotations"].get(PROJECT_SLUG) == f"acme/{single['slug']}"
    )
    assert descriptor["metadata"]["annotations"][LOCATION] == (
        f"url:https://bitbucket.org/acme/{single['slug']}/src/{single['mainbranch']}/"
        "catalog-info.yaml"
    )
    plain = next(r for r in repos if r["catalog_layout"] == "none")
    generated = mirror.entities[f"component:default/{plain['slug']}"]
    assert generated["metadata"]["annotations"][LOCATION] == (
        f"url:https://bitbucket.org/acme/{plain['slug']}"
    )

    # A push renames the descriptor's entity; a webhook deletes another repository.
    edited = (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: Edited-By-Push\n"
        "spec:\n  type: website\n  lifecycle: experimental\n  owner: group:default/web\n"
    )
    sim.admin("POST", f"repos/{single['slug']}/push", json={"files": {"catalog-info.yaml": edited}})
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    before_delete = mirror.cursor
    mirror.drain(limit=2)
    # Refs as Backstage's stringifyEntityRef writes them: lowercased, the body as written.
    assert mirror.entities["component:default/edited-by-push"]["metadata"]["name"] == (
        "Edited-By-Push"
    )
    assert ref_of(descriptor) not in mirror.entities
    summary, _ = process(
        rt, "repo:deleted", {"repository": repository(plain["slug"], plain["uuid"], sim.api_url)}
    )
    assert "left the catalog" in summary
    pages = Mirror(feed_client(rt))
    pages.cursor = before_delete
    removed = [ref for p in pages.drain() for ref in p["removed"]]
    assert f"component:default/{plain['slug']}" in removed
    mirror.drain(limit=3)
    assert mirror.entities == live(rt)


def test_pages_follow_the_order_of_changes(rt: Runtime) -> None:
    write(rt, *(f"svc-{i}" for i in range(10)), "MixedCase")
    mirror = Mirror(feed_client(rt))
    first = mirror.drain(limit=4)
    assert [len(p["added"]) for p in first] == [4, 4, 3]
    assert [p["more"] for p in first] == [True, True, False]
    assert set(mirror.entities) == {f"component:default/svc-{i}" for i in range(10)} | {
        "component:default/mixedcase"
    }

    write(rt, "svc-1", description="changed")
    retire(rt, "svc-2", "MixedCase")
    write(rt, "svc-3", description="changed")
    write(rt, "svc-2")  # back again
    retire(rt, "svc-4")
    pages = mirror.drain(limit=1)
    steps = [(p["added"][0]["metadata"]["name"] if p["added"] else p["removed"]) for p in pages]
    # svc-2 and MixedCase were retired together; svc-2 then came back, so the page holding
    # that retirement shows MixedCase removed (lowercased, as Backstage writes refs) and svc-2
    # in its state now (live).
    assert steps[0] == "svc-1"
    assert "svc-3" in steps and steps[-1] == ["component:default/svc-4"]
    assert ["component:default/mixedcase"] in steps
    assert pages[-1]["more"] is False
    assert mirror.entities["component:default/svc-1"]["metadata"]["description"] == "changed"
    assert mirror.entities == live(rt)

    # Nothing new: the same cursor comes back, with nothing to apply.
    again = mirror.page(limit=10)
    assert again == {"added": [], "removed": [], "cursor": mirror.cursor, "more": False}

    # A reader starting now gets the live set only, none of the deletions before it.
    fresh = Mirror(feed_client(rt))
    assert all(p["removed"] == [] for p in fresh.drain(limit=3))
    assert fresh.entities == live(rt)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "since"),
        ("since=abc", "since"),
        ("since=-1", "since"),
        ("since=1e3", "since"),
        ("since=" + "9" * 40, "since"),
        ("since=s1", "since"),
        ("since=0&limit=0", "limit"),
        ("since=0&limit=1001", "limit"),
        ("since=0&limit=many", "limit"),
    ],
)
def test_a_malformed_cursor_or_limit_is_a_400_naming_it(
    runtime_for: RuntimeFactory, sqlite_url: str, query: str, field: str
) -> None:
    from tests.conftest import migrate

    migrate(sqlite_url)
    response = feed_client(runtime_for()).get(f"/catalog/changes?{query}")
    assert response.status_code == 400
    assert response.json["error"] == "invalid_query"
    assert set(response.json["fields"]) == {field}


def test_a_cursor_older_than_the_retention_is_410_and_zero_starts_again(rt: Runtime) -> None:
    write(rt, "old-1", "old-2")
    mirror = Mirror(feed_client(rt))
    mirror.drain()
    stale_cursor = mirror.cursor
    write(rt, "old-1", description="edited")
    with rt.sessions() as session:
        session.execute(update(CatalogChange).values(changed_at=utcnow() - timedelta(days=30)))
        session.commit()
    write(rt, "new-1")
    with rt.sessions() as session:
        pruned = prune_changes(session, retention_days=7)
        session.commit()
    assert pruned["changes"] >= 2
    client = feed_client(rt)
    gone = client.get(f"/catalog/changes?since={stale_cursor}")
    assert gone.status_code == 410
    assert gone.json["error"] == "cursor_gone" and "since=0" in gone.json["message"]
    # A cursor this database never gave out is as useless: start again.
    assert client.get("/catalog/changes?since=999999").status_code == 410
    restart = Mirror(client)
    restart.drain()
    assert restart.entities == live(rt)
    assert restart.entities["component:default/old-1"]["metadata"]["description"] == "edited"
    # The reader that is up to date keeps going.
    write(rt, "new-2")
    assert [b["metadata"]["name"] for b in restart.page(10)["added"]] == ["new-2"]
    # A second pruning with nothing old left changes nothing.
    with rt.sessions() as session:
        assert prune_changes(session, retention_days=7)["changes"] == 0


def test_a_descriptor_cannot_move_its_location(rt: Runtime) -> None:
    from app.catalog.descriptors import parse_descriptor
    from app.catalog.entities import EntityBuilder, RepositoryView

    text = (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: sly\n"
        "  annotations:\n    backstage.io/managed-by-location: url:https://evil.example/x\n"
        "spec: {type: service, lifecycle: production, owner: a}\n"
    )
    (descriptor,) = parse_descriptor(text.encode(), max_bytes=10_000, max_documents=5)
    view = RepositoryView("acme", "sly", "Sly", "", "", "main", None, None)
    entity = EntityBuilder(rt.settings).from_descriptor(descriptor, view, "catalog-info.yaml")
    annotations = entity.body["metadata"]["annotations"]
    assert (
        annotations[LOCATION]
        == annotations[ORIGIN_LOCATION]
        == ("url:https://bitbucket.org/acme/sly/src/main/catalog-info.yaml")
    )


def test_entities_stored_before_locations_existed_are_served_with_them(rt: Runtime) -> None:
    legacy = {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": "legacy",
            "annotations": {
                "backstage.io/view-url": "https://bitbucket.org/acme/l/src/main/c.yaml"
            },
        },
        "spec": {},
    }
    with rt.sessions() as session:
        session.add(
            CatalogEntity(
                entity_ref="component:default/legacy",
                kind="Component",
                name="legacy",
                body=legacy,
                content_hash="x",
                source="descriptor",
                workspace="acme",
            )
        )
        session.commit()
    (body,) = Mirror(feed_client(rt)).drain()[0]["added"]
    assert body["metadata"]["annotations"][LOCATION] == (
        "url:https://bitbucket.org/acme/l/src/main/c.yaml"
    )
    assert live(rt)["component:default/legacy"] == body


def test_the_migration_numbers_entities_stored_before_the_change_log(
    runtime_for: RuntimeFactory, database_url: str
) -> None:
    from sqlalchemy import insert

    from tests.conftest import migrate

    migrate(database_url, "0005")
    rt = runtime_for(DATABASE_URL=database_url)
    row = {
        "entity_ref": "component:default/before",
        "kind": "Component",
        "namespace": "default",
        "name": "before",
        "body": component("before").body,
        "content_hash": "x",
        "source": "generated",
        "workspace": "acme",
        "updated_at": utcnow(),
    }
    with rt.engine.begin() as connection:
        connection.execute(insert(CatalogEntity.__table__), [row])  # type: ignore[arg-type]
    migrate(database_url)
    mirror = Mirror(feed_client(rt))
    mirror.drain()
    assert set(mirror.entities) == {"component:default/before"}
    assert mirror.cursor != "0"  # past it: the next poll is a delta, not a new snapshot
    assert mirror.page(10) == {"added": [], "removed": [], "cursor": mirror.cursor, "more": False}
