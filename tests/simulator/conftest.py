"""Fixtures for the simulator's own tests: live subprocesses and a webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from bitbucket_sim.testing import SimProcess

from .receiver import WebhookReceiver, running_receiver

WORKSPACE = "acme"


@pytest.fixture(scope="session")
def sim() -> Iterator[SimProcess]:
    """A shared simulator with default behaviour and no credentials (tests must not mutate)."""
    with SimProcess(workspace=WORKSPACE, repos=45, seed=7) as process:
        yield process


@pytest.fixture()
def http() -> Iterator[requests.Session]:
    """A session that never goes through a proxy from the environment."""
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    with running_receiver() as running:
        yield running
