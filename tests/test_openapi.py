"""The OpenAPI document: every route under /api, /catalog and /webhooks is in it, it is a
valid OpenAPI 3 document, and schemathesis over every operation (against a synced simulator,
with the API, catalog and Backstage user tokens and signed webhooks) finds no 5xx and no
answer that breaks its documented status, media type, headers or schema."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
import yaml
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate as validate_openapi
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from app.catalog.people import user_name
from app.models import CatalogEntity, Repository, RepositoryPermission, WorkspaceMember
from app.runtime import Runtime
from app.sync.activity import ActivityReconcile
from app.sync.people import PeopleSync
from app.sync.workspace import WorkspaceSync
from app.web import create_app
from app.web.openapi import DOCUMENTED_PREFIXES, UNDOCUMENTED, UndocumentedRoute, build_spec
from bitbucket_sim.testing import SimProcess
from tests.conftest import API_TOKEN
from tests.identity_support import ISSUER, jwks_server, user_token

SimFactory = Callable[..., SimProcess]
RuntimeFactory = Callable[..., Runtime]
WEBHOOK_SECRET = "test-secret"  # the conftest settings' BITBUCKET_WEBHOOK_SECRET
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]
# Invalid input must be refused with a 4xx.
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
# Per operation and run: small, so the whole run stays within a minute on 2 shared cores.
MAX_EXAMPLES = 8


def rules(app: Flask) -> set[tuple[str, str]]:
    """`(OpenAPI path, method)` of every rule under the documented prefixes."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(DOCUMENTED_PREFIXES):
            # `<converter:name>` (or `<converter(args):name>`) is `{name}` in OpenAPI.
            path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule)
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
                found.add((path, method.lower()))
    return found


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in document["paths"].items() for method in ops}


def test_every_api_catalog_and_webhook_route_is_in_a_valid_document(
    runtime_for: RuntimeFactory,
) -> None:
    app = create_app(runtime=runtime_for())
    document = app.test_client().get("/api/openapi.json").json
    validate_openapi(document)
    expected = rules(app)
    assert len(expected) >= 17
    assert expected <= documented(document)
    assert ("/webhooks/bitbucket", "post") in expected
    assert ("/webhooks/bitbucket-dc", "post") in expected
    assert {"/catalog/changes", "/catalog/entities", "/catalog/entities.yaml"} <= {
        p for p, _ in expected
    }
    # What is left out on purpose is none of them, and is a route of the app.
    left_out = {r.endpoint: r.rule for r in app.url_map.iter_rules() if r.endpoint in UNDOCUMENTED}
    assert set(left_out) == set(UNDOCUMENTED)
    assert not any(rule.startswith(DOCUMENTED_PREFIXES) for rule in left_out.values())
    # Every operation names who may call it and documents its error answers.
    webhook = document["paths"]["/webhooks/bitbucket"]["post"]
    assert {p["name"] for p in webhook["parameters"] if p["in"] == "header"} >= {
        "X-Event-Key",
        "X-Request-UUID",
        "X-Hub-Signature",
    }
    assert {"200", "202", "400", "401", "413", "503"} <= set(webhook["responses"])
    dc = document["paths"]["/webhooks/bitbucket-dc"]["post"]
    assert {p["name"] for p in dc["parameters"] if p["in"] == "header"} >= {
        "X-Event-Key",
        "X-Request-Id",
        "X-Hub-Signature",
    }
    assert {"200", "202", "400", "401", "404", "413", "503"} <= set(dc["responses"])
    for path, method in expected - {("/api/openapi.json", "get")}:
        assert "401" in document["paths"][path][method]["responses"], (path, method)


def test_a_view_without_an_operation_stops_the_document(runtime_for: RuntimeFactory) -> None:
    app = create_app(runtime=runtime_for())
    app.add_url_rule("/api/forgotten", "forgotten", lambda: {"x": 1})
    with app.app_context(), pytest.raises(UndocumentedRoute, match="/api/forgotten"):
        build_spec()


@dataclass
class World:
    rt: Runtime
    slug: str
    branch: str
    writer_token: str
    writer_account: str
    entity: dict[str, str]


@pytest.fixture
def world(
    sim_factory: SimFactory, runtime_for: RuntimeFactory, migrated_url: str
) -> Iterator[World]:
    """A synced simulator (repositories, activity, people, catalog), on SQLite and PostgreSQL,
    with the catalog locked by the API token and Backstage user tokens checked."""
    sim = sim_factory(repos=6, seed=12, access_token="sim-token")
    with jwks_server() as (jwks_url, key):
        rt = runtime_for(
            sim,
            DATABASE_URL=migrated_url,
            BITBUCKET_RATE_LIMIT_PER_HOUR="100000",
            BBSYNC_CATALOG_TOKENS=API_TOKEN,
            BBSYNC_BACKSTAGE_JWKS_URL=jwks_url,
            BBSYNC_BACKSTAGE_ISSUER=ISSUER,
        )
        with rt.sessions() as session:
            for sync in (WorkspaceSync, PeopleSync):
                sync(rt.bitbucket(), session, session.commit, rt.settings).run("acme")
            ActivityReconcile(rt.bitbucket(), session, session.commit).run("acme")
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
            entity = session.scalars(
                select(CatalogEntity)
                .where(CatalogEntity.repository_id == grant.repository_id)
                .order_by(CatalogEntity.entity_ref)
            ).first()
            assert repo is not None and entity is not None
            ref = f"user:default/{user_name(writer.nickname, writer.account_id)}"
            kind, _, rest = entity.entity_ref.partition(":")
            namespace, _, name = rest.partition("/")
            yield World(
                rt=rt,
                slug=repo.slug,
                branch=repo.default_branch or "main",
                writer_token=user_token(key, ref),
                writer_account=writer.account_id,
                entity={"kind": kind, "namespace": namespace, "name": name},
            )


@pytest.fixture
def yaml_streams() -> Iterator[None]:
    """Schemathesis reads `application/yaml` as one document; `/catalog/entities.yaml` is a
    stream of them (one per entity), checked against its schema as a list."""
    from schemathesis.core import deserialization, media_types

    def stream(_: Any, response: Any) -> Any:
        return list(yaml.safe_load_all(response.content.decode(response.encoding or "utf-8")))

    before = dict(deserialization._DESERIALIZERS)
    schemathesis.deserializer(*media_types.YAML_MEDIA_TYPES)(stream)
    yield
    deserialization._DESERIALIZERS.clear()
    deserialization._DESERIALIZERS.update(before)


def _pinned(world: World, op: Any) -> dict[str, Any] | None:
    """Parameters naming what the simulator and the sync made (a repository, an entity, a
    member, a branch), so that successful answers are checked too."""
    pinned: dict[str, Any] = {}
    if "{workspace}" in op.path:
        pinned["path_parameters"] = {"workspace": "acme", "slug": world.slug}
    if "{kind}" in op.path:
        pinned["path_parameters"] = world.entity
    if op.path == "/api/permissions":
        pinned["query"] = {"user": world.writer_account}
    if op.path == "/catalog/changes":
        pinned["query"] = {"since": "0"}
    if op.method.upper() == "POST" and op.path.endswith("/pipelines"):
        pinned["body"] = {"branch": world.branch}
    return pinned or None


@dataclass
class Run:
    failures: dict[str, str] = field(default_factory=dict)  # the first per operation
    calls: dict[str, set[int]] = field(default_factory=dict)  # statuses seen per operation


def _exercise(
    op: Any, strategy: Any, headers: dict[str, str], run: Run, checks: list[Any] = CHECKS
) -> None:
    """`MAX_EXAMPLES` generated requests to one operation, each answer checked; failures are
    collected (not raised, so hypothesis spends no time shrinking them)."""
    label = f"{op.method.upper()} {op.path}"

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        kwargs: dict[str, Any] = {"headers": dict(headers)}
        if op.path.startswith("/webhooks/") and not isinstance(case.body, bytes):
            # Signed as Bitbucket signs: an HMAC of the very bytes sent.
            raw = json.dumps(case.body).encode()
            digest = hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
            kwargs["headers"]["X-Hub-Signature"] = f"sha256={digest}"
            kwargs["data"] = raw
        try:
            response = case.call(**kwargs)
        except Exception as exc:  # the WSGI transport raises what the app raised (a 500)
            run.failures.setdefault(label, f"{type(exc).__name__}: {exc}")
            return
        run.calls.setdefault(label, set()).add(response.status_code)
        try:
            case.validate_response(response, checks=checks, headers=kwargs["headers"])
        except (AssertionError, FailureGroup) as exc:
            run.failures.setdefault(label, str(exc)[:2000])

    try:
        check()
    except Unsatisfiable:
        assert checks is NEGATIVE_CHECKS  # nothing to make invalid (no parameters, no body)


def test_schemathesis_finds_no_5xx_and_every_answer_matches_its_schema(
    world: World, yaml_streams: None
) -> None:
    app = create_app(runtime=world.rt)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every operation but the document itself (which schemathesis leaves out: it is read
    # and validated above).
    assert {(op.path, op.method.lower()) for op in operations} == documented(
        app.test_client().get("/api/openapi.json").json
    ) - {("/api/openapi.json", "get")}
    run, negative_run = Run(), Run()

    def bearer(security: list[dict[str, Any]]) -> dict[str, str]:
        names = {name for requirement in security for name in requirement}
        if "backstageUserToken" in names:
            return {"Authorization": f"Bearer {world.writer_token}"}
        if names:
            return {"Authorization": f"Bearer {API_TOKEN}"}
        return {}

    for op in operations:
        headers = bearer(op.definition.raw.get("security", []))
        pinned = _pinned(world, op)
        for fixed in [{}] if pinned is None else [{}, pinned]:
            _exercise(op, op.as_strategy(**fixed), headers, run)
        # Invalid input (wrong types, out of range, missing headers): a 4xx, never a 5xx.
        path_parameters = (pinned or {}).get("path_parameters")
        negative = op.as_strategy(GenerationMode.NEGATIVE, path_parameters=path_parameters)
        _exercise(op, negative, headers, negative_run, NEGATIVE_CHECKS)
    failures = {
        **run.failures,
        **{f"{k} (invalid input)": v for k, v in negative_run.failures.items()},
    }
    assert failures == {}, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    # Every operation was called, and the pinned runs reached real answers.
    calls = run.calls
    assert set(calls) == {f"{op.method.upper()} {op.path}" for op in operations}
    for label in (
        "GET /api/repositories/{workspace}/{slug}/pullrequests",
        "GET /api/repositories/{workspace}/{slug}/health",
        "GET /api/entities/{kind}/{namespace}/{name}/health",
        "GET /catalog/entities",
        "GET /api/permissions",
        "GET /catalog/changes",
        "POST /webhooks/bitbucket",
        "POST /api/repositories/{workspace}/{slug}/pipelines",
    ):
        assert calls[label] & {200, 201, 202}, (label, calls[label])


def test_what_schemathesis_found_is_a_4xx_or_served(world: World) -> None:
    """Each of these was a 5xx (mostly on PostgreSQL) before."""
    client = create_app(runtime=world.rt).test_client()
    api = {"Authorization": f"Bearer {API_TOKEN}"}
    # An offset past what the database holds.
    huge = client.get(f"/api/deliveries?offset={2**63}", headers=api)
    assert huge.status_code == 400 and "offset" in huge.json["fields"]
    # A NUL character in a path parameter or a filter.
    for url in (
        f"/api/repositories/acme/{world.slug}/pipelines?result=a%00b",
        "/api/deliveries?event=a%00b",
        "/api/repositories/ac%00me/x/health",
    ):
        answer = client.get(url, headers=api)
        assert answer.status_code == 400 and answer.json["error"] == "invalid_request", url
    # A feed cursor naming an entity id past the integer range: nothing is left after it.
    page = client.get("/catalog/changes?since=s0.999999999999999999", headers=api)
    assert page.status_code == 200 and page.json["added"] == [], page.json
    # A branch with control characters, and a branch Bitbucket does not have.
    user = {"Authorization": f"Bearer {world.writer_token}"}
    path = f"/api/repositories/acme/{world.slug}/pipelines"
    nul = client.post(path, json={"branch": "ma\x00in"}, headers=user)
    assert nul.status_code == 400 and nul.json["error"] == "invalid_body"
    missing = client.post(path, json={"branch": "no-such-branch"}, headers=user)
    assert missing.status_code == 422 and missing.json["error"] == "refused_by_bitbucket"
    assert "no-such-branch" in missing.json["message"]
