"""The optional locks on the endpoints that were open to anyone who could reach the service:
`/catalog/*` (people's account ids and emails), `/metrics` and the status page. Unset, each
stays open (the zero-config demo); set, each answers 401 JSON with `WWW-Authenticate` until
the right credential comes, and counts what it refused."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from app.runtime import Runtime
from app.web import create_app
from tests.conftest import API_TOKEN, migrate
from tests.identity_support import ISSUER, jwks_server

RuntimeFactory = Callable[..., Runtime]
LOCKS = {
    "BBSYNC_CATALOG_TOKENS": "catalog-old,catalog-new",
    "BBSYNC_METRICS_TOKEN": "scrape-token",
    "BBSYNC_STATUS_BASIC_AUTH": "ops:pass:word,viewer:v-pass",
}


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def locked(runtime_for: RuntimeFactory, sqlite_url: str) -> Flask:
    migrate(sqlite_url)
    return create_app(runtime=runtime_for(**LOCKS))


def catalog_paths(app: Flask) -> list[str]:
    """Every GET route of the catalog blueprint, present and future."""
    paths = [
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("catalog.") and "GET" in (rule.methods or ())
    ]
    assert "/catalog/entities.yaml" in paths and "/catalog/entities" in paths
    assert "/catalog/changes" in paths
    # The change feed needs its cursor; every other route answers without parameters.
    return [f"{p}?since=0" if p == "/catalog/changes" else p for p in paths]


def assert_refused(response: TestResponse, challenge: str) -> None:
    assert response.status_code == 401
    assert response.json is not None and response.json["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith(challenge)


def test_the_catalog_lock_covers_every_catalog_route(locked: Flask) -> None:
    client: FlaskClient = locked.test_client()
    for path in catalog_paths(locked):
        assert_refused(client.get(path), "Bearer")
        assert_refused(client.get(path, headers=bearer("catalog-older")), "Bearer")
        # The API's service token is not a catalog token.
        assert_refused(client.get(path, headers=bearer(API_TOKEN)), "Bearer")
        for token in ("catalog-old", "catalog-new"):
            assert client.get(path, headers=bearer(token)).status_code == 200, path
    assert "catalog-old" not in client.get("/catalog/entities").get_data(as_text=True)


def test_the_metrics_lock_wants_its_bearer_token(locked: Flask) -> None:
    client: FlaskClient = locked.test_client()
    assert_refused(client.get("/metrics"), "Bearer")
    assert_refused(client.get("/metrics", headers=bearer("catalog-old")), "Bearer")
    assert client.get("/metrics", headers=bearer("scrape-token")).status_code == 200


def test_the_status_page_wants_a_login_like_flower(locked: Flask) -> None:
    client: FlaskClient = locked.test_client()
    assert_refused(client.get("/"), "Basic")
    assert_refused(client.get("/", headers=basic("ops", "pass")), "Basic")
    assert_refused(client.get("/", headers=basic("viewer", "pass:word")), "Basic")
    assert_refused(client.get("/", headers=bearer("scrape-token")), "Basic")
    for hostile in ("Basic ###not-base64###", "Basic \xe9\xff\xfe", "Basic", "\xe9" * 5000):
        assert_refused(client.get("/", headers={"Authorization": hostile}), "Basic")
    assert client.get("/", headers=basic("ops", "pass:word")).status_code == 200
    assert client.get("/", headers=basic("viewer", "v-pass")).status_code == 200


def test_refusals_are_counted_by_endpoint_and_reason(locked: Flask) -> None:
    client: FlaskClient = locked.test_client()
    client.get("/catalog/entities.yaml")
    client.get("/catalog/entities", headers=bearer("nope"))
    client.get("/catalog/entities", headers=bearer("nope"))
    client.get("/")
    text = client.get("/metrics", headers=bearer("scrape-token")).get_data(as_text=True)
    counts = {
        (m.group(1), m.group(2)): float(m.group(3))
        for m in re.finditer(
            r'^bbsync_unauthenticated_requests_total\{endpoint="(\w+)",reason="(\w+)"\} (\S+)$',
            text,
            re.MULTILINE,
        )
    }
    assert counts == {
        ("catalog", "missing_credential"): 1,
        ("catalog", "wrong_credential"): 2,
        ("status", "missing_credential"): 1,
    }


def test_without_locks_the_endpoints_stay_open(
    runtime_for: RuntimeFactory, sqlite_url: str
) -> None:
    migrate(sqlite_url)
    app = create_app(runtime=runtime_for())
    client: FlaskClient = app.test_client()
    for path in [*catalog_paths(app), "/metrics", "/"]:
        assert client.get(path).status_code == 200, path
    assert client.get("/api/budget").status_code == 401  # the API keeps its own token


# What a header can carry on the wire (latin-1), non-ASCII included, short and long.
header_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300
) | st.text(alphabet="ab.=-_\xe9", min_size=4000, max_size=9000)
authorization = st.one_of(
    header_text,
    st.tuples(
        st.sampled_from(["Bearer ", "bearer ", "Basic ", "BASIC ", "Basic"]), header_text
    ).map("".join),
    st.binary(max_size=200).map(lambda raw: "Basic " + base64.b64encode(raw).decode()),
)
PROTECTED = [
    ("GET", "/catalog/entities.yaml"),
    ("GET", "/catalog/entities"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/api/budget"),
    ("POST", "/api/repositories/acme/any/pipelines"),
]


@pytest.fixture
def locked_with_identity(runtime_for: RuntimeFactory, sqlite_url: str) -> Iterator[Flask]:
    migrate(sqlite_url)
    with jwks_server() as (url, _):
        rt = runtime_for(BBSYNC_BACKSTAGE_JWKS_URL=url, BBSYNC_BACKSTAGE_ISSUER=ISSUER, **LOCKS)
        yield create_app(runtime=rt)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(header=authorization, target=st.sampled_from(PROTECTED))
def test_any_authorization_header_gets_a_401_never_a_5xx(
    locked_with_identity: Flask, header: str, target: tuple[str, str]
) -> None:
    method, path = target
    client: FlaskClient = locked_with_identity.test_client()
    response = client.open(path, method=method, headers={"Authorization": header}, json={})
    assert response.status_code == 401, (header[:80], path, response.get_data()[:200])
    assert response.is_json and "WWW-Authenticate" in response.headers
