"""The Data Center client against the simulator's Data Center flavour: start/limit paging to
`isLastPage`, both credentials, the foreign-host refusal, call counting, degraded admin reads,
and a 429 pausing every process that shares the credential."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app.bitbucket.budget import Priority
from app.bitbucket.datacenter import DataCenterClient, repo_path
from app.bitbucket.errors import (
    BitbucketError,
    BudgetPaused,
    CredentialError,
    ForeignHostError,
    RateLimited,
)
from app.runtime import Runtime
from bitbucket_sim.testing import SimProcess

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]


def dc_env(sim: SimProcess, **overrides: str) -> dict[str, str]:
    """Data Center alone: no Cloud workspace, no Cloud credential."""
    return {
        "BITBUCKET_WORKSPACES": "",
        "BITBUCKET_ACCESS_TOKEN": "",
        "BITBUCKET_DC_URL": sim.url,
        "BITBUCKET_DC_TOKEN": "dc-token",
        "BITBUCKET_DC_RATE_PER_SECOND": "1000",
        "BITBUCKET_DC_BURST": "1000",
        **overrides,
    }


@pytest.fixture
def dc_sim(sim_factory: SimFactory) -> SimProcess:
    return sim_factory(
        flavor="datacenter",
        repos=30,
        access_token="dc-token",
        username="jdoe",
        api_token="pat-1",
        non_admin_token="reader-token",
    )


def client_for(runtime_for: RuntimeFactory, sim: SimProcess, **env: str) -> DataCenterClient:
    return runtime_for(**dc_env(sim, **env)).datacenter()


def by_project(sim: SimProcess) -> dict[str, list[str]]:
    projects: dict[str, list[str]] = {}
    for repo in sim.repositories():
        projects.setdefault(repo["project_key"], []).append(repo["slug"])
    return projects


def test_paging_follows_next_page_start_until_the_last_page(
    dc_sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    expected = by_project(dc_sim)
    key, slugs = max(expected.items(), key=lambda item: len(item[1]))
    client = client_for(runtime_for, dc_sim)
    pages = list(client.iter_pages(f"projects/{key}/repos", limit=4))
    seen = [repo["slug"] for page in pages for repo in page.values]
    assert sorted(seen) == sorted(slugs)  # every repository once
    assert len(pages) == -(-len(slugs) // 4)
    assert [page.start for page in pages] == list(range(0, len(slugs), 4))
    assert pages[-1].next_start is None
    assert client.ledger.by_family["repositories"] == len(pages)
    assert dc_sim.stats()["calls"]["repos"] == len(pages)


def test_a_start_past_the_end_is_one_empty_last_page(
    dc_sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    client = client_for(runtime_for, dc_sim)
    pages = list(client.iter_pages("projects", start=500))
    assert [(page.values, page.next_start) for page in pages] == [([], None)]


class _PagingServer(BaseHTTPRequestHandler):
    """A server serving at most 3 items a page whatever the limit, or a broken envelope."""

    items = list(range(10))
    broken = False

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        start = int(query["start"][0])
        chunk = self.items[start : start + 3]
        last = start + len(chunk) >= len(self.items)
        page: dict[str, Any] = {"values": chunk, "start": start, "isLastPage": last}
        if not last:
            page["nextPageStart"] = start if self.broken else start + len(chunk)
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def paging_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PagingServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    _PagingServer.broken = False


def test_a_server_serving_fewer_than_asked_loses_nothing(
    paging_server: ThreadingHTTPServer, runtime_for: RuntimeFactory
) -> None:
    port = paging_server.server_address[1]
    rt = runtime_for(BITBUCKET_DC_URL=f"http://127.0.0.1:{port}", BITBUCKET_DC_TOKEN="x")
    client = rt.datacenter()
    assert list(client.paginate("projects", limit=1000)) == list(range(10))
    assert client.ledger.total == 4


def test_a_page_that_does_not_move_forward_is_an_error_not_a_loop(
    paging_server: ThreadingHTTPServer, runtime_for: RuntimeFactory
) -> None:
    _PagingServer.broken = True
    port = paging_server.server_address[1]
    client = runtime_for(BITBUCKET_DC_URL=f"http://127.0.0.1:{port}").datacenter()
    with pytest.raises(BitbucketError, match="nextPageStart is 0"):
        list(client.paginate("projects"))
    assert client.ledger.total == 1


@pytest.mark.parametrize(
    "credential",
    [
        {"BITBUCKET_DC_TOKEN": "dc-token"},  # HTTP access token, Bearer
        {"BITBUCKET_DC_TOKEN": "pat-1"},  # personal access token, Bearer
        {"BITBUCKET_DC_TOKEN": "pat-1", "BITBUCKET_DC_USERNAME": "jdoe"},  # Basic
    ],
)
def test_each_credential_is_accepted(
    dc_sim: SimProcess, runtime_for: RuntimeFactory, credential: dict[str, str]
) -> None:
    client = client_for(runtime_for, dc_sim, **credential)
    assert {p["key"] for p in client.projects()} == set(by_project(dc_sim))


def test_a_refused_credential_names_the_endpoint_and_status(
    dc_sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    client = client_for(runtime_for, dc_sim, BITBUCKET_DC_TOKEN="wrong-token")
    with pytest.raises(CredentialError) as caught:
        list(client.projects())
    assert caught.value.status == 401
    assert "GET projects" in str(caught.value)
    assert "wrong-token" not in str(caught.value)


def test_urls_off_the_configured_server_are_refused(
    dc_sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    client = client_for(runtime_for, dc_sim)
    host_port = urlsplit(dc_sim.url).netloc
    host, port = host_port.rsplit(":", 1)
    for url in (
        "https://evil.example.com/rest/api/latest/projects",
        f"http://{host}:{int(port) + 1}/rest/api/latest/projects",  # same host, other port
        f"http://{host_port}/rest/build-status/latest/commits/abc",  # outside the REST base
        f"http://{host_port}/projects/PLAT/repos/svc-0000/browse",
        f"http://user:pw@{host_port}/rest/api/latest/projects",
    ):
        with pytest.raises(ForeignHostError) as caught:
            client.get_json(url)
        assert "only" in str(caught.value) and "BITBUCKET_DC_URL" in str(caught.value)
    assert client.ledger.total == 0
    assert dc_sim.stats()["calls_total"] == 0


def test_repositories_branches_files_and_activity_are_read_and_counted(
    dc_sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    client = client_for(runtime_for, dc_sim)
    summary = next(r for r in dc_sim.repositories() if r["catalog_layout"] == "single")
    key, slug = summary["project_key"], summary["slug"]
    branch = client.default_branch(key, slug)
    assert branch is not None
    assert (branch["displayId"], branch["latestCommit"]) == (summary["mainbranch"], summary["head"])
    descriptor = client.file(key, slug, "catalog-info.yaml", at=branch["id"])
    assert descriptor is not None and descriptor.content and b"kind:" in descriptor.content
    assert client.file(key, slug, "no/such/file.yaml", at=branch["id"]) is None
    head = client.last_commit(key, slug, branch["id"])
    assert head is not None and head["id"] == summary["head"]
    pulls = list(client.pull_requests(key, slug))
    assert pulls and {p["state"] for p in pulls} <= {"OPEN", "MERGED", "DECLINED"}
    builds = list(client.build_statuses(key, slug, summary["head"]))
    assert builds and all("state" in b for b in builds)
    assert {b["displayId"] for b in client.branches(key, slug)} == set(summary["branches"])
    assert client.repository_permissions(key, slug, "users")
    assert client.warnings == []
    families = client.ledger.by_family
    assert (families["refs"], families["src"], families["commits"]) == (2, 2, 1)
    assert (families["pullrequests"], families["statuses"], families["permissions"]) == (1, 1, 1)
    assert dc_sim.stats()["calls_total"] == client.ledger.total == 8


def test_older_servers_without_default_branch_use_branches_default(
    sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    sim = sim_factory(flavor="datacenter", repos=5, access_token="dc-token")
    client = client_for(runtime_for, sim)
    summary = sim.repositories()[0]
    sim.set_config(legacy_default_branch=True)
    path = repo_path(summary["project_key"], summary["slug"], "default-branch")
    sim.admin("POST", "faults", json={"status": 404, "path_contains": path})
    branch = client.default_branch(summary["project_key"], summary["slug"])
    assert branch is not None and branch["displayId"] == summary["mainbranch"]
    assert client.ledger.total == 2


def test_admin_reads_a_reader_may_not_make_degrade_with_a_warning(
    dc_sim: SimProcess, runtime_for: RuntimeFactory
) -> None:
    client = client_for(runtime_for, dc_sim, BITBUCKET_DC_TOKEN="reader-token")
    key = next(iter(by_project(dc_sim)))
    assert client.project_permissions(key, "groups") is None
    assert len(client.warnings) == 1 and "permissions of project" in client.warnings[0]
    assert client.users()  # any licensed user may list users


def test_a_429_pauses_every_process_sharing_the_credential(
    sim_factory: SimFactory, runtime_for: RuntimeFactory
) -> None:
    sim = sim_factory(flavor="datacenter", repos=5, access_token="dc-token", rate_limit="6/m")
    sim.set_config(burst=3)
    rt = runtime_for(**dc_env(sim))
    client = rt.datacenter()
    with pytest.raises(RateLimited) as caught:
        for _ in range(4):
            client.get_json("projects")
    assert 5 <= (caught.value.retry_after or 0) <= 10  # Retry-After: a token back at 6/m
    stats_before = sim.stats()
    assert stats_before["rate_limited"] == 1

    # Another process, same server and token: it must not call while the pause lasts.
    env = {
        **os.environ,
        "DATABASE_URL": rt.settings.database_url,
        "REDIS_URL": rt.settings.redis_url,
        **dc_env(sim),
    }
    script = (
        "import json\n"
        "from app.config import load_settings\n"
        "from app.runtime import Runtime\n"
        "from app.bitbucket.errors import BudgetPaused\n"
        "client = Runtime(load_settings(None)).datacenter(priority='webhook')\n"
        "try:\n"
        "    client.get_json('projects')\n"
        "    print(json.dumps({'outcome': 'called'}))\n"
        "except BudgetPaused as exc:\n"
        "    print(json.dumps({'outcome': 'paused', 'retry_after': exc.retry_after}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["outcome"] == "paused"
    assert 0 < outcome["retry_after"] <= 10
    assert sim.stats()["calls_total"] == stats_before["calls_total"]
    with pytest.raises(BudgetPaused):
        rt.datacenter(priority=Priority.WEBHOOK).get_json("projects")
