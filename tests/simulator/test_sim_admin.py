"""Admin changes beyond pushes: repositories, members, runtime flags; and `SimServer`."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest
import requests
import yaml

from bitbucket_sim.content import RepositoryTheme, _api, _component, _dump, _system
from bitbucket_sim.server import SimConfig, SimServer
from bitbucket_sim.testing import SimProcess

from .receiver import WebhookReceiver, running_receiver

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def admin_sim() -> Iterator[tuple[SimProcess, WebhookReceiver]]:
    with (
        running_receiver() as receiver,
        SimProcess(repos=6, seed=13, webhook_url=receiver.url) as sim,
    ):
        yield sim, receiver


def keys_of(receiver: WebhookReceiver, count: int) -> list[str]:
    return [r.headers["X-Event-Key"] for r in receiver.wait_for(count)]


def test_create_update_and_delete_a_repository(admin_sim) -> None:
    sim, receiver = admin_sim
    repos = f"{sim.api_url}/repositories/{sim.workspace}"
    created = sim.admin(
        "POST", "repos", json={"name": "New Service", "files": {"catalog-info.yaml": "kind: x\n"}}
    )
    assert created.status_code == 201 and created.json()["slug"] == "new-service"
    assert requests.get(f"{repos}/new-service", timeout=10).status_code == 200
    patched = sim.admin("PATCH", "repos/new-service", json={"description": "Now described"})
    assert patched.json()["description"] == "Now described"
    assert sim.admin("DELETE", "repos/new-service").status_code == 200
    assert requests.get(f"{repos}/new-service", timeout=10).status_code == 404
    assert keys_of(receiver, 3)[-3:] == ["repo:created", "repo:updated", "repo:deleted"]
    updated = json.loads(receiver.requests[-2].body)
    assert updated["changes"]["description"] == {"old": "", "new": "Now described"}
    assert sim.admin("PATCH", "repos/nope", json={}).status_code == 404
    assert (
        sim.admin("PATCH", f"repos/{sim.repositories()[0]['slug']}", json={"x": 1}).status_code
        == 400
    )


def test_push_moves_updated_on_only_when_configured(admin_sim) -> None:
    sim, _ = admin_sim
    slug = sim.repositories()[1]["slug"]
    url = f"{sim.api_url}/repositories/{sim.workspace}/{slug}"
    before = requests.get(url, timeout=10).json()["updated_on"]
    sim.admin("POST", f"repos/{slug}/push", json={"files": {"x.txt": "1"}})
    moved = requests.get(url, timeout=10).json()["updated_on"]
    assert moved > before
    sim.set_config(push_updates_updated_on=False)
    try:
        sim.admin("POST", f"repos/{slug}/push", json={"files": {"x.txt": "2"}})
        assert requests.get(url, timeout=10).json()["updated_on"] == moved
    finally:
        sim.set_config(push_updates_updated_on=True)


def test_members_can_join_and_leave(admin_sim) -> None:
    sim, _ = admin_sim
    members_url = f"{sim.api_url}/workspaces/{sim.workspace}/members?pagelen=100"

    def account_ids() -> list[str]:
        values = requests.get(members_url, timeout=10).json()["values"]
        assert all("username" not in v["user"] for v in values)
        return [v["user"]["account_id"] for v in values]

    user = sim.admin("POST", "members", json={"display_name": "New Person"}).json()
    assert user["account_id"].startswith("557058:") and user["account_id"] in account_ids()
    assert sim.admin("DELETE", f"members/{user['account_id']}").status_code == 200
    assert user["account_id"] not in account_ids()


def test_groups_api_can_be_switched_off(admin_sim) -> None:
    sim, _ = admin_sim
    url = f"{sim.url}/1.0/groups/{sim.workspace}"
    groups = requests.get(url, timeout=10).json()
    assert isinstance(groups, list) and 2 <= len(groups) <= 5
    assert all({"slug", "name", "members"} <= set(group) for group in groups)
    sim.set_config(groups_api=False)
    try:
        assert requests.get(url, timeout=10).status_code in (404, 410)
    finally:
        sim.set_config(groups_api=True)
    assert sim.admin("POST", "config", json={"no_such_flag": 1}).status_code == 400


def test_generated_yaml_reads_back_as_the_same_documents() -> None:
    rng = random.Random(3)
    theme = RepositoryTheme("svc-1", "Svc 1", "A: tricky # text", "go", "devs", "core", "acme")
    documents = [_component(theme, rng), _api(theme, rng), _system(theme)]
    assert list(yaml.safe_load_all(_dump(documents))) == documents


def test_sim_server_serves_in_process() -> None:
    server = SimServer(SimConfig(workspace="inproc", repos=3, seed=1, port=0)).start()
    try:
        assert server.api_url == server.url + "/2.0" and server.port > 0
        session = requests.Session()
        session.trust_env = False
        page = session.get(f"{server.api_url}/repositories/inproc", timeout=10).json()
        assert page["size"] == 3
        assert page["values"][0]["links"]["self"]["href"].startswith(server.url)
    finally:
        server.stop()


def test_a_repository_permission_taken_away_and_queried_by_full_name() -> None:
    with SimProcess(repos=12, seed=8) as sim:
        url = f"{sim.api_url}/workspaces/{sim.workspace}/permissions/repositories"
        everything = requests.get(url, params={"pagelen": 100}, timeout=10).json()["values"]
        repos = sim.repositories()
        names = [f"{sim.workspace}/{r['slug']}" for r in repos[:3]]
        query = " OR ".join(f'repository.full_name="{n}"' for n in names)
        named = requests.get(url, params={"q": query, "pagelen": 100}, timeout=10).json()
        # Only the named repositories' rows, the same rows as in the whole listing.
        expected = [v for v in everything if v["repository"]["full_name"] in names]
        assert named["values"] == expected and named["size"] == len(expected) > 0
        mixed = requests.get(
            url, params={"q": f'{query} OR permission="admin"', "pagelen": 100}, timeout=10
        ).json()["values"]
        assert len(mixed) >= len(expected)  # any other query is the generic filter

        slug = repos[0]["slug"]
        account, permission = next(iter(repos[0]["user_permissions"].items()))
        taken = sim.admin("DELETE", f"repos/{slug}/permissions/users/{account}")
        assert taken.status_code == 200 and taken.json()["permission"] == permission
        assert account not in sim.admin("GET", f"repos/{slug}").json()["user_permissions"]
        again = sim.admin("DELETE", f"repos/{slug}/permissions/users/{account}")
        assert again.status_code == 404
        after = requests.get(url, params={"q": query, "pagelen": 100}, timeout=10).json()
        assert after["size"] == len(expected) - 1
