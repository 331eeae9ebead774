"""The change feed end to end: the simulator delivers signed webhooks to bbsync's web process
(gunicorn), a real Celery worker processes them on PostgreSQL, and a reader polling
`GET /catalog/changes` over HTTP, as a Backstage provider does, ends with the served catalog."""

from __future__ import annotations

from typing import Any

import requests

from tests.test_webhook_flow import System, descriptor, system

__all__ = ["system"]  # the running system, a fixture


class HttpMirror:
    def __init__(self, web_url: str) -> None:
        self.url = f"{web_url}/catalog/changes"
        self.cursor = "0"
        self.entities: dict[str, dict[str, Any]] = {}

    def drain(self, limit: int = 7) -> None:
        while True:
            response = requests.get(
                self.url, params={"since": self.cursor, "limit": limit}, timeout=10
            )
            assert response.status_code == 200, response.text
            page = response.json()
            for body in page["added"]:
                meta = body["metadata"]
                ref = f"{body['kind']}:{meta.get('namespace', 'default')}/{meta['name']}"
                self.entities[ref.lower()] = body
            for ref in page["removed"]:
                self.entities.pop(ref, None)
            self.cursor = page["cursor"]
            if not page["more"]:
                return


def served(system: System) -> dict[str, dict[str, Any]]:
    found = {}
    for body in system.entities():
        meta = body["metadata"]
        found[f"{body['kind']}:{meta.get('namespace', 'default')}/{meta['name']}".lower()] = body
    return found


def test_a_feed_reader_follows_webhooks_to_the_served_catalog(system: System) -> None:
    system.settled()
    mirror = HttpMirror(system.web_url)
    mirror.drain()
    assert mirror.entities == served(system)

    made = system.sim.admin(
        "POST",
        "repos",
        json={"slug": "feed-made", "files": {"catalog-info.yaml": descriptor("feed-first")}},
    )
    assert made.status_code < 300, made.text

    def has(ref: str) -> bool:
        mirror.drain()
        return ref in mirror.entities

    system.wait_for(lambda: has("component:default/feed-first"))
    system.sim.admin(
        "POST",
        "repos/feed-made/push",
        json={"files": {"catalog-info.yaml": descriptor("feed-second")}},
    )
    system.wait_for(
        lambda: (
            has("component:default/feed-second")
            and "component:default/feed-first" not in mirror.entities
        )
    )
    second = mirror.entities["component:default/feed-second"]["metadata"]["annotations"]
    assert second["backstage.io/managed-by-location"] == (
        "url:https://bitbucket.org/acme/feed-made/src/main/catalog-info.yaml"
    )
    system.sim.admin("DELETE", "repos/feed-made")
    system.wait_for(lambda: not has("component:default/feed-second"))
    system.settled()
    mirror.drain()
    assert mirror.entities == served(system)
