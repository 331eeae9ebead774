"""The entity page in a REAL browser: the `@bbsync/plugin-bbsync` dev app (`@backstage/dev-utils`
`createDevApp`, served by `backstage-cli package start`) shows a component read from a real
Backstage catalog, with bbsync's health card, pull-request tab and pipeline tab, driven by
Debian's Chromium through Playwright. Behind it: the real Backstage backend of the end-to-end
test (catalog + bbsync's provider module + bbsync's backend plugin + the auth backend with the
guest provider) on PostgreSQL, bbsync (web + worker) and the simulator.

The guest signs in as a Bitbucket workspace member that bbsync's people sync mirrored: a member
with write access to one repository (Run pipeline creates the pipeline in the simulator) and
none to another (the button is disabled and says why). bbsync verifies the guest's Backstage
token against the backend's JWKS. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from app.sync.activity import ActivityReconcile
from app.sync.people import PeopleSync
from tests.conftest import API_TOKEN, ROOT
from tests.test_backstage_e2e import (
    CLI,
    Backstage,
    _config,
    _wait,
    config_args,
    require_backstage,
    running_backstage,
    stop_group,
)
from tests.test_status_page import CHROMIUM, CHROMIUM_ARGS
from tests.test_webhook_flow import System, free_port, running_system

playwright_api = pytest.importorskip("playwright.sync_api")

PLUGIN_DIR = ROOT / "backstage" / "plugins" / "bbsync"
ARTIFACTS = ROOT / "tests" / "artifacts"
PROJECT_SLUG = "bitbucket.com/project-slug"
USER_ID = "bitbucket.org/user-id"
WRITE = {"write", "admin"}


@dataclass
class Cast:
    """The guest's User entity name, a repository it may write and one it may not."""

    user: str
    writable: str
    unwritable: str

    def component(self, system: System, slug: str) -> str:
        for entity in system.entities(kind="Component"):
            if entity["metadata"].get("annotations", {}).get(PROJECT_SLUG) == f"acme/{slug}":
                return f"component:default/{entity['metadata']['name']}".lower()
        raise AssertionError(f"no component for acme/{slug}")


@dataclass
class Stack:
    system: System
    backstage: Backstage
    app_url: str
    cast: Cast


def _api(system: System, path: str, **params: str) -> Any:
    response = requests.get(
        f"{system.web_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def _count(system: System, slug: str, what: str, **params: str) -> int:
    return len(_api(system, f"/api/repositories/acme/{slug}/{what}", **params)["items"])


def mirror_people_and_activity(system: System) -> None:
    """What the worker's scheduled tasks do: members, groups and permissions (User entities),
    then pull requests and pipelines."""
    rt = system.rt
    with rt.sessions() as session:
        PeopleSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
        ActivityReconcile(rt.bitbucket(), session, session.commit).run("acme")


def choose_cast(system: System) -> Cast:
    """From the simulator's generated members and permissions (as bbsync mirrored them): a
    member with write access to a repository that has open pull requests and pipelines, and a
    repository with pull requests where that member has no write access."""
    slugs = sorted(
        e["metadata"]["annotations"][PROJECT_SLUG].split("/", 1)[1]
        for e in system.entities(kind="Component")
        if PROJECT_SLUG in e["metadata"].get("annotations", {})
    )
    busy = [
        s
        for s in slugs
        if _count(system, s, "pullrequests", state="OPEN") and _count(system, s, "pipelines")
    ]
    for user in system.entities(kind="User"):
        account = user["metadata"]["annotations"][USER_ID]
        items = _api(system, "/api/permissions", user=account)["items"]
        writes = {i["repository"].split("/", 1)[1] for i in items if i["permission"] in WRITE}
        writable = [s for s in busy if s in writes]
        unwritable = [s for s in busy if s not in writes]
        if writable and unwritable:
            return Cast(user["metadata"]["name"], writable[0], unwritable[0])
    raise AssertionError(
        "the simulator's data has no member who writes one busy repo but not another"
    )


def _app_config(app_port: int, user: str) -> str:
    origin = f"http://127.0.0.1:{app_port}"
    return f"""
app:
  title: bbsync dev app
  baseUrl: {origin}
  listen: {{host: 127.0.0.1, port: {app_port}}}
backend:
  cors: {{origin: {origin}, methods: [GET, HEAD, PATCH, POST, PUT, DELETE], credentials: true}}
auth:
  environment: development
  providers:
    guest:
      userEntityRef: user:default/{user}
      dangerouslyAllowOutsideDevelopment: true
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not CLI.exists():
        pytest.skip("Backstage packages are not installed: run `make backstage-install`")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    work = tmp_path_factory.mktemp("browser")
    port, app_port = free_port(), free_port()
    auth = f"http://127.0.0.1:{port}/api/auth"
    identity = {
        "BBSYNC_BACKSTAGE_JWKS_URL": f"{auth}/.well-known/jwks.json",
        "BBSYNC_BACKSTAGE_ISSUER": auth,
        "BBSYNC_BACKSTAGE_AUDIENCE": "backstage",
    }
    with running_system(work, identity) as system:
        require_backstage(system.web_url)
        mirror_people_and_activity(system)
        cast = choose_cast(system)
        prefix = f"bbsync_ui_{uuid.uuid4().hex[:8]}_"
        configs = [work / "app-config.yaml", work / "app-config.browser.yaml"]
        _config(configs[0], port, prefix, system.web_url)
        configs[1].write_text(_app_config(app_port, cast.user))
        with running_backstage(configs, port, prefix, work / "backstage.log") as backstage:
            log = work / "app.log"
            app = subprocess.Popen(
                [str(CLI), "package", "start", *config_args(configs)],
                cwd=PLUGIN_DIR,
                env={**os.environ, "NODE_ENV": "development", "CI": "true", "BROWSER": "none"},
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            app_url = f"http://127.0.0.1:{app_port}"
            try:
                _until(lambda: _answers(app_url), 300, app, log)
                yield Stack(system, backstage, app_url, cast)
            finally:
                stop_group(app)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _until(condition: Callable[[], bool], timeout: float, process: Any, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"not ready within {timeout}s\n{log.read_text()[-4000:]}")


def _in_catalog(stack: Stack, ref: str) -> None:
    _wait(stack.backstage, lambda: ref in stack.backstage.refs(), 120)


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _open_entity(browser: Any, stack: Stack, ref: str, tab: str = "") -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{stack.app_url}/entity{tab}?entity={ref}")
    page.get_by_role("button", name="Enter").click()
    page.get_by_role("tab", name="Overview").wait_for()
    return page


def test_entity_page_shows_bbsync_data_and_runs_a_pipeline_as_writer(
    stack: Stack, browser: Any
) -> None:
    cast, system = stack.cast, stack.system
    ref = cast.component(system, cast.writable)
    _in_catalog(stack, ref)
    _in_catalog(stack, f"user:default/{cast.user}")
    ARTIFACTS.mkdir(exist_ok=True)
    page = _open_entity(browser, stack, ref)

    page.get_by_text("Last pipelines", exact=True).wait_for()
    # The health card: the innermost element holding its title and its sections.
    card = (
        page.locator("div")
        .filter(has=page.get_by_text("Bitbucket", exact=True))
        .filter(has=page.get_by_text("Last pipelines", exact=True))
        .last
    )
    assert f"acme/{cast.writable}" in card.inner_text()
    assert "Open pull requests" in card.inner_text()
    card.screenshot(path=str(ARTIFACTS / "backstage-health-card.png"))

    page.get_by_role("tab", name="Pull requests").click()
    table = page.locator("table").first
    table.locator("tbody tr").first.wait_for()
    open_prs = _count(system, cast.writable, "pullrequests", state="OPEN")
    assert table.locator("tbody tr").count() >= min(open_prs, 5)
    page.screenshot(path=str(ARTIFACTS / "backstage-pull-requests.png"), full_page=True)

    page.get_by_role("tab", name="Pipelines").click()
    page.locator("table tbody tr").first.wait_for()
    before = {p["build_number"] for p in _sim_pipelines(stack, cast.writable)}
    run = page.get_by_role("button", name="Run pipeline")
    assert run.is_enabled()
    page.screenshot(path=str(ARTIFACTS / "backstage-pipelines.png"), full_page=True)

    run.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Run", exact=True).click()
    started = dialog.get_by_text("started")
    started.wait_for()
    created = {p["build_number"] for p in _sim_pipelines(stack, cast.writable)} - before
    assert len(created) == 1, created
    assert f"Pipeline #{created.pop()} started" in started.inner_text()
    page.screenshot(path=str(ARTIFACTS / "backstage-pipeline-run.png"))


def test_a_reader_sees_run_pipeline_disabled_with_the_reason(stack: Stack, browser: Any) -> None:
    cast = stack.cast
    ref = cast.component(stack.system, cast.unwritable)
    _in_catalog(stack, ref)
    page = _open_entity(browser, stack, ref)
    page.get_by_role("tab", name="Pipelines").click()
    button = page.get_by_role("button", name="Run pipeline")
    button.wait_for()
    assert button.is_disabled()
    button.locator("xpath=..").hover()
    tooltip = page.get_by_role("tooltip")
    assert f"no write access to acme/{cast.unwritable}" in tooltip.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "backstage-run-pipeline-reader.png"))


def _sim_pipelines(stack: Stack, slug: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"{stack.system.sim.api_url}/repositories/acme/{slug}/pipelines/",
        params={"pagelen": "100", "sort": "-created_on"},
        headers={"Authorization": "Bearer sim-token"},
        timeout=10,
    )
    response.raise_for_status()
    values: list[dict[str, Any]] = response.json()["values"]
    return values
