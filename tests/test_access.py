"""The pipeline trigger under hostile input and a failing Bitbucket, through the real parts:
the simulator as a process, a full sync and the people sync, user tokens signed against a
local JWKS. Who a user is comes only from Bitbucket's member list; a POST reaches Bitbucket
once, within the action timeout, and is always audited; a caller without a valid user token
is counted, never stored."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select

from app.catalog.entities import built
from app.catalog.people import user_name
from app.models import (
    AccessAudit,
    BitbucketGroup,
    CatalogEntity,
    EntitySource,
    Repository,
    RepositoryPermission,
    Workspace,
    WorkspaceMember,
)
from app.runtime import Runtime
from app.sync.people import PeopleSync
from app.sync.workspace import WorkspaceSync
from app.web import create_app
from bench.processes import gunicorn
from bitbucket_sim.testing import SimProcess
from tests.conftest import ROOT
from tests.identity_support import ISSUER, jwks_server, new_key, user_token

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]
TRIGGER_ACTIONS = (
    "pipeline_trigger_refused",
    "pipeline_trigger_attempted",
    "pipeline_trigger_allowed",
    "pipeline_trigger_failed",
)


class Access:
    """A synced simulator, a JWKS with its key, and a writer of one repository."""

    def __init__(self, sim: SimProcess, jwks_url: str, key: Any, make: RuntimeFactory) -> None:
        self.sim, self.jwks_url, self.key, self._make = sim, jwks_url, key, make
        self.rt = self.runtime()
        with self.rt.sessions() as session:
            WorkspaceSync(self.rt.bitbucket(), session, session.commit, self.rt.settings).run(
                "acme"
            )
            PeopleSync(self.rt.bitbucket(), session, session.commit, self.rt.settings).run("acme")
            grant = session.scalars(
                select(RepositoryPermission)
                .where(
                    RepositoryPermission.principal_type == "user",
                    RepositoryPermission.permission.in_(("write", "admin")),
                )
                .order_by(RepositoryPermission.id)
            ).first()
            assert grant is not None
            repo = session.get(Repository, grant.repository_id)
            writer = session.scalars(
                select(WorkspaceMember).where(WorkspaceMember.account_id == grant.principal)
            ).one()
            assert repo is not None
            self.slug, self.branch = repo.slug, repo.default_branch or "main"
            self.writer_account = writer.account_id
            self.writer_ref = f"user:default/{user_name(writer.nickname, writer.account_id)}"

    def runtime(self, **overrides: str) -> Runtime:
        env = {
            "BITBUCKET_RATE_LIMIT_PER_HOUR": "100000",
            "BBSYNC_BACKSTAGE_JWKS_URL": self.jwks_url,
            "BBSYNC_BACKSTAGE_ISSUER": ISSUER,
            **overrides,
        }
        return self._make(self.sim, **env)

    def post(self, bearer: str | None, rt: Runtime | None = None, slug: str = "") -> Any:
        client: FlaskClient = create_app(runtime=rt or self.rt).test_client()
        headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
        return client.post(
            f"/api/repositories/acme/{slug or self.slug}/pipelines",
            json={"branch": self.branch},
            headers=headers,
        )

    def as_user(self, ref: str, rt: Runtime | None = None) -> Any:
        return self.post(user_token(self.key, ref), rt)

    def audits(self) -> list[AccessAudit]:
        with self.rt.sessions() as session:
            return list(
                session.scalars(
                    select(AccessAudit)
                    .where(AccessAudit.action.in_(TRIGGER_ACTIONS))
                    .order_by(AccessAudit.id)
                )
            )

    def pipeline_posts(self) -> int:
        """Calls to the pipelines endpoints the simulator has answered so far."""
        return int(self.sim.stats()["calls"]["pipelines"])

    def pipelines_in_bitbucket(self) -> int:
        response = requests.get(
            f"{self.sim.api_url}/repositories/acme/{self.slug}/pipelines/",
            params={"pagelen": 100},
            headers={"Authorization": "Bearer sim-token"},
            timeout=10,
        )
        response.raise_for_status()
        return len(response.json()["values"])


@pytest.fixture
def access(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> Iterator[Access]:
    """On SQLite and on PostgreSQL."""
    sim = sim_factory(repos=10, seed=12, access_token="sim-token")

    def make(sim: SimProcess | None = None, **env: str) -> Runtime:
        return runtime_for(sim, **{"DATABASE_URL": migrated_url, **env})

    with jwks_server() as (url, key):
        yield Access(sim, url, key, make)


def _descriptor_user(name: str, account_id: str) -> str:
    return (
        "apiVersion: backstage.io/v1alpha1\nkind: User\nmetadata:\n"
        f"  name: {name}\n  annotations:\n    bitbucket.org/user-id: '{account_id}'\n"
        "spec:\n  memberOf: []\n"
    )


def test_a_user_declared_in_a_descriptor_cannot_trigger_as_the_account_it_names(
    access: Access,
) -> None:
    other = next(r for r in access.sim.repositories() if r["slug"] != access.slug)
    pushed = access.sim.admin(
        "POST",
        f"repos/{other['slug']}/push",
        json={"files": {"catalog-info.yaml": _descriptor_user("mallory", access.writer_account)}},
    )
    assert pushed.status_code == 201
    with access.rt.sessions() as session:
        WorkspaceSync(access.rt.bitbucket(), session, session.commit, access.rt.settings).run(
            "acme"
        )
        # Whether descriptors may declare a User at all is BBSYNC_DESCRIPTOR_KINDS' business;
        # the trigger must refuse even when such a row is in the table.
        entity = built(
            {
                "apiVersion": "backstage.io/v1alpha1",
                "kind": "User",
                "metadata": {
                    "name": "mallory-stored",
                    "annotations": {"bitbucket.org/user-id": access.writer_account},
                },
                "spec": {"memberOf": []},
            }
        )
        session.add(
            CatalogEntity(
                entity_ref=entity.ref,
                kind=entity.kind,
                namespace=entity.namespace,
                name=entity.name,
                body=entity.body,
                content_hash=entity.content_hash,
                source=EntitySource.DESCRIPTOR.value,
                workspace="acme",
            )
        )
        session.commit()
    before = access.pipeline_posts()

    for forged in ("user:default/mallory", "user:default/mallory-stored"):
        refused = access.as_user(forged)
        assert refused.status_code == 403, refused.json
        assert "no current member" in refused.json["message"]
    assert access.pipeline_posts() == before  # nothing reached Bitbucket
    allowed = access.as_user(access.writer_ref)  # the member's own name still works
    assert allowed.status_code == 201, allowed.json
    statuses = [(a.subject, a.detail.get("status")) for a in access.audits()]
    assert statuses[:2] == [("user:default/mallory", 403), ("user:default/mallory-stored", 403)]


def test_a_member_name_taken_by_a_descriptor_is_refused(access: Access) -> None:
    """Had a descriptor defined `user:default/<writer>` first, carrying an outsider's account,
    Backstage would sign the outsider in as the writer: that name proves no one."""
    with access.rt.sessions() as session:
        outsider = session.scalars(
            select(WorkspaceMember).where(WorkspaceMember.account_id != access.writer_account)
        ).first()
        row = session.scalars(
            select(CatalogEntity).where(CatalogEntity.entity_ref == access.writer_ref)
        ).one()
        assert outsider is not None and row.source == EntitySource.PEOPLE.value
        body = dict(row.body)
        body["metadata"] = {
            **body["metadata"],
            "annotations": {"bitbucket.org/user-id": outsider.account_id},
        }
        row.body, row.source = body, EntitySource.DESCRIPTOR.value
        session.commit()
    before = access.pipeline_posts()
    refused = access.as_user(access.writer_ref)
    assert refused.status_code == 403, refused.json
    assert "not bbsync's entity for that member" in refused.json["message"]
    assert access.pipeline_posts() == before


def test_a_pipeline_post_answered_5xx_is_sent_once_and_audited(access: Access) -> None:
    access.sim.admin(
        "POST",
        "faults",
        json={"status": 503, "times": 10, "path_contains": "/pipelines", "method": "POST"},
    )
    existing = access.pipelines_in_bitbucket()
    before = access.pipeline_posts()

    answer = access.as_user(access.writer_ref)

    assert answer.status_code == 502, answer.json
    assert "may have started" in answer.json["message"]
    assert access.pipeline_posts() == before + 1  # not retried
    assert access.pipelines_in_bitbucket() == existing
    attempted, failed = access.audits()
    assert attempted.action == "pipeline_trigger_attempted"
    assert attempted.detail["account_id"] == access.writer_account
    assert failed.action == "pipeline_trigger_failed"
    assert failed.detail["status"] == 502 and failed.detail["attempt"] == attempted.id


def test_a_slow_bitbucket_gets_one_post_and_a_504_saying_the_pipeline_may_have_started(
    access: Access,
) -> None:
    rt = access.runtime(BBSYNC_ACTION_TIMEOUT_SECONDS="1")
    access.sim.admin(
        "POST",
        "faults",
        json={"delay_seconds": 6, "times": 10, "path_contains": "/pipelines", "method": "POST"},
    )
    existing = access.pipelines_in_bitbucket()
    before = access.pipeline_posts()

    answer = access.as_user(access.writer_ref, rt)

    assert answer.status_code == 504, answer.json
    assert answer.json["error"] == "bitbucket_timeout"
    assert "the pipeline may have started; check Bitbucket" in answer.json["message"]
    assert access.pipeline_posts() == before + 1
    # Bitbucket did start it (only its answer was late), exactly once.
    assert access.pipelines_in_bitbucket() == existing + 1
    attempted, failed = access.audits()
    assert (attempted.action, failed.action) == (
        "pipeline_trigger_attempted",
        "pipeline_trigger_failed",
    )
    assert failed.detail["status"] == 504 and failed.detail["attempt"] == attempted.id


def _counter(text: str, endpoint: str, reason: str) -> float:
    pattern = (
        rf'^bbsync_unauthenticated_requests_total\{{endpoint="{endpoint}",'
        rf'reason="{reason}"\}} (\S+)$'
    )
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_requests_without_a_valid_user_token_are_counted_never_stored(access: Access) -> None:
    expired = user_token(access.key, access.writer_ref, exp=int(time.time()) - 60)
    answers = [
        access.post(None),
        access.post("not-a-jwt"),
        access.post(user_token(new_key(), access.writer_ref)),  # signed by someone else
        access.post(expired),
        access.post(user_token(access.key, access.writer_ref, iss="http://elsewhere/api/auth")),
        access.post(user_token(access.key, access.writer_ref, aud="bbsync")),
        access.post("x" * 20_000),
        access.post("\xe9\xff." * 10),
    ]
    assert [a.status_code for a in answers] == [401] * 8
    assert all(a.headers["WWW-Authenticate"].startswith("Bearer") for a in answers)
    unconfigured = access.post(user_token(access.key, access.writer_ref), access._make(access.sim))
    assert unconfigured.status_code == 503
    assert access.audits() == []

    # A proven user's refusal is kept: someone with a valid token and no write access.
    with access.rt.sessions() as session:
        writers = {
            p.principal
            for p in session.scalars(select(RepositoryPermission))
            if p.permission in ("write", "admin")
        }
        reader = next(
            m
            for m in session.scalars(select(WorkspaceMember).order_by(WorkspaceMember.id))
            if m.account_id not in writers
        )
    reader_ref = f"user:default/{user_name(reader.nickname, reader.account_id)}"
    assert access.as_user(reader_ref).status_code == 403
    assert [a.detail["status"] for a in access.audits()] == [403]

    metrics = create_app(runtime=access.rt).test_client().get("/metrics").get_data(as_text=True)
    assert _counter(metrics, "pipeline_trigger", "missing_token") == 1
    assert _counter(metrics, "pipeline_trigger", "invalid_token") == 7
    assert _counter(metrics, "pipeline_trigger", "not_configured") == 1


def test_backstage_user_tokens_pass_with_the_default_audience(access: Access) -> None:
    assert access.rt.settings.backstage_audience == "backstage"
    allowed = access.as_user(access.writer_ref)
    assert allowed.status_code == 201, allowed.json
    no_issuer = user_token(access.key, access.writer_ref, iss=None)
    assert access.post(no_issuer).status_code == 401


def test_with_the_database_down_nothing_is_started(access: Access) -> None:
    rt = access.runtime(DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    before = access.pipeline_posts()
    answer = access.as_user(access.writer_ref, rt)
    assert answer.status_code == 503
    assert answer.json["error"] == "database_unavailable"
    assert access.pipeline_posts() == before


def test_a_group_of_another_workspace_with_the_same_slug_grants_nothing(access: Access) -> None:
    with access.rt.sessions() as session:
        acme = session.scalars(select(Workspace).where(Workspace.slug == "acme")).one()
        repo = session.scalars(select(Repository).where(Repository.slug == access.slug)).one()
        granted = {p.principal for p in session.scalars(select(RepositoryPermission))}
        in_groups = {a for g in session.scalars(select(BitbucketGroup)) for a in g.members or []}
        insider, outsider = [
            m
            for m in session.scalars(select(WorkspaceMember).order_by(WorkspaceMember.id))
            if m.account_id not in granted | in_groups
        ][:2]
        elsewhere = Workspace(uuid="{00000000-0000-0000-0000-00000000beef}", slug="elsewhere")
        session.add(elsewhere)
        session.flush()
        # `deployers` may write to the repository; in acme the insider is one of them, and a
        # group of the same slug in another workspace holds the outsider.
        session.add_all(
            [
                RepositoryPermission(
                    repository_id=repo.id,
                    principal_type="group",
                    principal="deployers",
                    permission="write",
                ),
                BitbucketGroup(
                    workspace_id=acme.id, slug="deployers", members=[insider.account_id]
                ),
                BitbucketGroup(
                    workspace_id=elsewhere.id, slug="deployers", members=[outsider.account_id]
                ),
            ]
        )
        session.commit()
        refs = [f"user:default/{user_name(m.nickname, m.account_id)}" for m in (insider, outsider)]
    assert access.as_user(refs[0]).status_code == 201
    refused = access.as_user(refs[1])
    assert refused.status_code == 403, refused.json
    assert "no write access" in refused.json["message"]


WSGI_APP = "app.web.wsgi:app"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_under_gunicorn_a_slow_bitbucket_is_answered_before_the_worker_timeout(
    access: Access, tmp_path: Path
) -> None:
    """Gunicorn kills a worker after `--timeout`; the trigger answers first, and the attempt
    is in the audit table however the call ends."""
    port = _free_port()
    settings = access.rt.settings
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BITBUCKET_API_URL": access.sim.api_url,
        "BITBUCKET_WORKSPACES": "acme",
        "BITBUCKET_ACCESS_TOKEN": "sim-token",
        "BITBUCKET_WEBHOOK_SECRET": "test-secret",
        "BITBUCKET_RATE_LIMIT_PER_HOUR": "100000",
        "BBSYNC_BACKSTAGE_JWKS_URL": access.jwks_url,
        "BBSYNC_BACKSTAGE_ISSUER": ISSUER,
        "BBSYNC_ACTION_TIMEOUT_SECONDS": "2",
        "LOG_FORMAT": "json",
    }
    log = (tmp_path / "web.log").open("w")
    web = subprocess.Popen(
        gunicorn(port, workers=1, app=WSGI_APP, timeout=6),
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, ready = time.monotonic() + 90, False
        while not ready and time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):  # still booting
                ready = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok
            time.sleep(0.2)
        assert ready, (tmp_path / "web.log").read_text()[-3000:]
        access.sim.admin(
            "POST",
            "faults",
            json={"delay_seconds": 15, "path_contains": "/pipelines", "method": "POST"},
        )
        before = access.pipeline_posts()
        answer = requests.post(
            f"http://127.0.0.1:{port}/api/repositories/acme/{access.slug}/pipelines",
            json={"branch": access.branch},
            headers={"Authorization": f"Bearer {user_token(access.key, access.writer_ref)}"},
            timeout=60,
        )
    finally:
        web.terminate()
        web.wait(timeout=30)
        log.close()
    assert answer.status_code == 504, (tmp_path / "web.log").read_text()[-3000:]
    assert "the pipeline may have started; check Bitbucket" in answer.json()["message"]
    assert access.pipeline_posts() == before + 1
    assert [a.action for a in access.audits()] == [
        "pipeline_trigger_attempted",
        "pipeline_trigger_failed",
    ]
