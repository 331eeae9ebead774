"""The status page in a real browser (Debian's Chromium driven by Playwright), with data from
a real sync; the screenshot is saved under tests/artifacts/."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from app.bitbucket.client import api_path
from app.bitbucket.errors import RateLimited
from app.runtime import Runtime
from app.sync.workspace import WorkspaceSync
from app.web import create_app
from bitbucket_sim.testing import SimProcess
from tests.conftest import ROOT, migrate

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_the_status_page_renders_a_real_sync_in_chromium(
    sim_factory: Callable[..., SimProcess], runtime_for: Callable[..., Runtime], sqlite_url: str
) -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium package is needed (.ci/run installs it)"
    migrate(sqlite_url)
    sim = sim_factory(
        repos=40,
        seed=4,
        access_token="sim-token",
        rate_limit="8/m",
        raw_rate_limit="1000/m",
        retry_after=1,
    )
    rt = runtime_for(sim, BITBUCKET_TOKEN_CREATED="2026-08-01")
    with rt.sessions() as session:
        WorkspaceSync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
    rt.budget.reset()
    with pytest.raises(RateLimited):  # mark a 429 on the chart
        for _ in range(20):
            rt.bitbucket().get_json(api_path("workspaces", "acme"))

    server = make_server("127.0.0.1", 0, create_app(runtime=rt), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.goto(f"http://127.0.0.1:{server.server_port}/")
            workspaces = page.inner_text("#workspaces")
            assert "acme" in workspaces and "40" in workspaces
            assert "catalog succeeded" in workspaces
            assert "Component" in page.inner_text("#entities")
            assert page.locator("#budget-chart rect").count() > 0
            # Labelled axes; the hourly window beside the bars; only the families used.
            assert page.locator("#budget-chart .x-tick").count() == 6
            assert page.locator("#budget-chart .y-tick").count() == 3
            assert "reserved for webhooks" in page.inner_text("#window-repositories")
            assert page.locator("#window-raw").count() == 1
            legend = page.inner_text(".legend")
            assert "repositories" in legend and "pipelines" not in legend
            assert "generated at" in page.inner_text("#generated")
            assert page.locator('meta[http-equiv="refresh"]').count() == 1
            assert page.locator("#budget-chart .mark-429").count() >= 1
            assert "429" in page.inner_text("#budget")
            assert "days old" in page.inner_text("#token")
            assert page.locator("#broken-files li").count() >= 1
            file_link = page.locator("#broken-files li a").first.get_attribute("href") or ""
            assert file_link.startswith("https://bitbucket.org/acme/") and "/src/" in file_link
            page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
            page.locator("#broken-files li a", has_text="health").first.click()
            assert page.locator("#health").count() == 1
            assert "open pull requests" in page.inner_text("#health")
            page.screenshot(path=str(ARTIFACTS / "repository-page.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000
