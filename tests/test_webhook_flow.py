"""Real time, end to end: the simulator delivers signed webhooks to bbsync's web process
(gunicorn), a real Celery worker processes them, and the served catalog follows."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import select

from app.bitbucket.webhooks import HANDLED_EVENTS
from app.config import settings_from_env
from app.models import PullRequest, WebhookDelivery
from app.runtime import Runtime
from app.sync.events import EventProcessor
from app.sync.workspace import WorkspaceSync
from app.task_names import QUEUES, REQUEUE_DELIVERIES, enqueue, producer
from bench import databases
from bench.processes import celery_worker, gunicorn
from bitbucket_sim.testing import SimProcess
from tests.conftest import API_TOKEN, PG_ADMIN_URL, REDIS_TEST_URL, ROOT, migrate
from tests.fault_support import PrivateRabbit, wait_until
from tests.webhook_support import SECRET, pullrequest_body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class System:
    sim: SimProcess
    web_url: str
    rt: Runtime
    env: dict[str, str]
    logs: Path

    def entities(self, **query: str) -> list[dict[str, Any]]:
        response = requests.get(
            f"{self.web_url}/catalog/entities", params={"limit": "5000", **query}, timeout=10
        )
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def names(self, kind: str = "Component") -> set[str]:
        return {e["metadata"]["name"] for e in self.entities(kind=kind)}

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        try:
            wait_until(condition, timeout, "condition")
        except AssertionError as exc:
            logs = "\n".join(p.read_text()[-3000:] for p in self.logs.glob("*.log"))
            raise AssertionError(f"{exc}\n{logs}") from None

    def worker_busy(self) -> bool:
        """Whether a task waits in the broker's queues or in the worker (running, prefetched,
        or held until its countdown, as a trailing catalog read is)."""
        app = producer(self.env["CELERY_BROKER_URL"])
        try:
            with app.connection_for_write() as conn:
                for queue in QUEUES:
                    with conn.channel() as channel:
                        try:
                            if channel.queue_declare(queue=queue, passive=True)[1]:
                                return True
                        except conn.channel_errors:
                            pass  # not declared yet (RabbitMQ) or empty (Redis): no task
            inspect = app.control.inspect(timeout=5, limit=1)  # one worker answers
            held = (inspect.active(), inspect.reserved(), inspect.scheduled())
            # No answer is not "idle": the worker may be too busy to reply in time.
            return any(h is None or any(h.values()) for h in held)
        finally:
            app.close()

    def settled(self, timeout: float = 60) -> None:
        """Wait until every delivery is processed and no task (a catalog refresh, say) is
        still to run, twice in a row: a task finishing may just have queued another."""
        client = redis.Redis.from_url(self.env["REDIS_URL"])

        def idle() -> bool:
            with self.rt.sessions() as session:
                open_ = session.scalars(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.status.in_(["pending", "queued"])
                    )
                ).all()
            return (
                not open_
                and not client.keys("bbsync:catalog-refresh/*/trailing")
                and not self.worker_busy()
            )

        self.wait_for(idle, timeout)
        self.wait_for(idle, timeout)
        client.close()


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The whole flow runs on each broker the README offers: Redis, and RabbitMQ."""
    if request.param == "redis":
        yield REDIS_TEST_URL
        return
    why_not = PrivateRabbit.ensure_running()
    if why_not:
        pytest.skip(why_not)
    rabbit = PrivateRabbit()
    rabbit.create()
    try:
        yield rabbit.url()
    finally:
        rabbit.delete()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("flow"), broker_url=broker_url) as running:
        yield running


@contextlib.contextmanager
def running_system(
    logs: Path, extra_env: dict[str, str] | None = None, broker_url: str = REDIS_TEST_URL
) -> Iterator[System]:
    """bbsync (gunicorn web + Celery worker) on a fresh migrated PostgreSQL database (a copy of
    the migrated template) and the simulator;
    `extra_env` adds settings (e.g. the Backstage JWKS URL of a backend started later)."""
    name = f"bbsync_flow_{uuid.uuid4().hex[:10]}"
    database_url = databases.create_migrated(PG_ADMIN_URL, name)
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    port = free_port()
    web_url = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []
    with SimProcess(
        workspace="acme", repos=40, seed=21, access_token="sim-token", webhook_retry_delay=0.2
    ) as sim:
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_TEST_URL,
            "CELERY_BROKER_URL": broker_url,
            "BITBUCKET_API_URL": sim.api_url,
            "BITBUCKET_WORKSPACES": "acme",
            "BITBUCKET_ACCESS_TOKEN": "sim-token",
            "BITBUCKET_WEBHOOK_SECRET": SECRET,
            # Wide enough that the 200-push burst below fits in one window even on a slow CI.
            "BBSYNC_PUSH_COALESCE_SECONDS": "10",
            "BBSYNC_API_TOKENS": API_TOKEN,
            "BBSYNC_REQUEUE_AFTER_SECONDS": "1",
            "LOG_FORMAT": "json",
            **(extra_env or {}),
        }
        rt = Runtime(settings_from_env(env))
        # Installed through the hooks API, as an operator would, so a test can pause it.
        requests.post(
            f"{sim.api_url}/workspaces/acme/hooks",
            headers={"Authorization": "Bearer sim-token"},
            json={
                "url": f"{web_url}/webhooks/bitbucket",
                "active": True,
                "events": list(HANDLED_EVENTS),
                "secret": SECRET,
                "description": "bbsync",
            },
            timeout=10,
        ).raise_for_status()
        with rt.sessions() as session:
            WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
        processes.append(start(gunicorn(port), env, logs / "web.log"))
        processes.append(start(celery_worker(2), env, logs / "worker.log"))
        system = System(sim, web_url, rt, env, logs)
        system.wait_for(lambda: _answers(f"{web_url}/healthz"), 30)
        try:
            yield system
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            rt.engine.dispose()
            databases.drop(PG_ADMIN_URL, name)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def layout(sim: SimProcess, kind: str) -> list[dict[str, Any]]:
    return [r for r in sim.repositories() if r["catalog_layout"] == kind]


def descriptor(name: str) -> str:
    return (
        "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n"
        f"  name: {name}\nspec:\n  type: service\n  lifecycle: production\n"
        "  owner: group:default/team\n"
    )


def test_a_pushed_catalog_edit_is_served_within_seconds(system: System) -> None:
    repo = layout(system.sim, "single")[0]
    started = time.monotonic()
    system.sim.admin(
        "POST",
        f"repos/{repo['slug']}/push",
        json={"files": {"catalog-info.yaml": descriptor("edited-by-push")}},
    )
    system.wait_for(lambda: "edited-by-push" in system.names(), timeout=20)
    print(f"\npush to served entity: {time.monotonic() - started:.2f}s")


def test_rename_delete_and_create_flow_through(system: System) -> None:
    renamed, deleted = layout(system.sim, "none")[:2]
    assert renamed["slug"] in system.names()
    system.sim.admin(
        "POST",
        f"repos/{renamed['slug']}/rename",
        json={"name": "Shiny New Name", "slug": "shiny-new-name"},
    )
    system.wait_for(
        lambda: "shiny-new-name" in system.names() and renamed["slug"] not in system.names()
    )
    shiny = next(
        e for e in system.entities(kind="Component") if e["metadata"]["name"] == "shiny-new-name"
    )
    assert shiny["metadata"]["annotations"]["bitbucket.com/project-slug"] == "acme/shiny-new-name"

    system.sim.admin("DELETE", f"repos/{deleted['slug']}")
    system.wait_for(lambda: deleted["slug"] not in system.names())

    created = system.sim.admin("POST", "repos", json={"slug": "brand-new", "name": "Brand New"})
    assert created.status_code < 300, created.text
    system.wait_for(lambda: "brand-new" in system.names())


def test_a_burst_of_pushes_costs_one_read_per_repository(system: System) -> None:
    repos = layout(system.sim, "single")[1:11]
    system.settled()
    system.sim.reset_stats()
    pushes_before = len(system.sim.deliveries())
    for round_ in range(20):
        for repo in repos:
            system.sim.admin(
                "POST", f"repos/{repo['slug']}/push", json={"files": {f"notes/{round_}.txt": "x"}}
            )
    system.sim.wait_for_deliveries(pushes_before + 200, timeout=60)
    system.settled()
    fetches = system.sim.stats()["calls"]["src"]
    print(f"\n200 pushes to 10 repositories: {fetches} catalog file fetches")
    assert 10 <= fetches <= 20


def test_deliveries_arriving_while_the_broker_is_down_are_all_processed(
    system: System, tmp_path: Path
) -> None:
    # A second web process whose broker is unreachable: deliveries are stored, not queued.
    port = free_port()
    env = {**system.env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    hooks = f"{system.sim.api_url}/workspaces/acme/hooks"
    auth = {"Authorization": "Bearer sim-token"}
    main_hook = next(
        h
        for h in requests.get(hooks, headers=auth, timeout=10).json()["values"]
        if h["url"].startswith(system.web_url)
    )
    main_hook_url = f"{hooks}/{main_hook['uuid']}"
    web = start(gunicorn(port, workers=1), env, tmp_path / "web-nobroker.log")
    try:
        system.wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"))
        # Only the broker-less web process hears about these pushes.
        requests.put(main_hook_url, headers=auth, timeout=10, json={**main_hook, "active": False})
        requests.post(
            hooks,
            headers=auth,
            timeout=10,
            json={
                "url": f"http://127.0.0.1:{port}/webhooks/bitbucket",
                "active": True,
                "events": ["repo:push"],
                "secret": SECRET,
                "description": "no broker",
            },
        )
        repos = layout(system.sim, "single")[11:16]
        for i, repo in enumerate(repos):
            system.sim.admin(
                "POST",
                f"repos/{repo['slug']}/push",
                json={"files": {"catalog-info.yaml": descriptor(f"offline-{i}")}},
            )
        with system.rt.sessions() as session:
            system.wait_for(
                lambda: (
                    len(
                        session.scalars(
                            select(WebhookDelivery).where(WebhookDelivery.status == "pending")
                        ).all()
                    )
                    >= len(repos)
                )
            )
        # Inherent: the requeue only takes deliveries older than BBSYNC_REQUEUE_AFTER_SECONDS.
        time.sleep(1.5)
        # The broker "returns": beat's requeue task runs on the real broker.
        enqueue(producer(system.env["CELERY_BROKER_URL"]), REQUEUE_DELIVERIES)
        system.wait_for(lambda: {f"offline-{i}" for i in range(len(repos))} <= system.names())
    finally:
        requests.put(main_hook_url, headers=auth, timeout=10, json={**main_hook, "active": True})
        web.terminate()
        web.wait(timeout=20)


def test_out_of_order_pull_request_events_never_regress(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    migrate(sqlite_url)
    sim = sim_factory(repos=5, access_token="sim-token")
    rt = runtime_for(sim)
    slug = sim.repositories()[0]["slug"]
    uuid_ = sim.repositories()[0]["uuid"]
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
        processor = EventProcessor(rt.bitbucket(), session, rt.settings, lambda _: None)
        merged = pullrequest_body(
            7,
            "MERGED",
            "2026-11-02T10:00:00.000001+00:00",
            slug=slug,
            uuid_=uuid_,
            api_url=sim.api_url,
        )
        opened = pullrequest_body(
            7,
            "OPEN",
            "2026-11-01T10:00:00.000001+00:00",
            slug=slug,
            uuid_=uuid_,
            api_url=sim.api_url,
            title="Old title",
        )
        for key, body in (("pullrequest:fulfilled", merged), ("pullrequest:created", opened)):
            delivery = WebhookDelivery(request_uuid=str(uuid.uuid4()), event_key=key, body=body)
            assert processor.process(delivery)
        session.commit()
        pr = session.scalars(select(PullRequest)).one()
        assert (pr.state, pr.title, pr.merge_commit) == ("MERGED", "Add metrics", "fedcba654321")
        assert pr.closed_on is not None


def test_a_pull_request_lifecycle_flows_through_webhooks(system: System) -> None:
    slug = layout(system.sim, "none")[3]["slug"]
    system.sim.admin("POST", f"repos/{slug}/branches", json={"name": "feature/flow"})
    number = system.sim.admin(
        "POST", f"repos/{slug}/pullrequests", json={"source": "feature/flow", "title": "Flow"}
    ).json()["id"]
    url = f"{system.web_url}/api/repositories/acme/{slug}/pullrequests"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}

    def state() -> str | None:
        items = requests.get(url, headers=auth, timeout=10).json()["items"]
        return next((p["state"] for p in items if p["id"] == number), None)

    system.wait_for(lambda: state() == "OPEN")
    system.sim.admin("POST", f"repos/{slug}/pullrequests/{number}/approve", json={})
    system.sim.admin("POST", f"repos/{slug}/pullrequests/{number}/merge", json={})
    system.wait_for(lambda: state() == "MERGED")
    health = requests.get(
        f"{system.web_url}/api/repositories/acme/{slug}/health", headers=auth, timeout=10
    ).json()
    assert health["last_push_at"] is not None  # the merge commit's push
