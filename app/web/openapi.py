"""`GET /api/openapi.json`: the OpenAPI document of the HTTP API, built from the url map.

Each view under `/api`, `/catalog` and `/webhooks` declares its operation beside it with
`@documented(...)`, naming the marshmallow schemas that load its input and dump its answer;
`build_spec` walks `current_app.url_map` and turns every rule into operations through apispec's
marshmallow plugin. A rule that is neither documented nor in `UNDOCUMENTED` (with the reason)
stops the document from being built, so a new view cannot go out undocumented.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, Literal, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, jsonify
from marshmallow import Schema
from werkzeug.routing import Rule

from app.web.converters import WORKSPACE_PATTERN
from app.web.responses import ErrorSchema

openapi = Blueprint("openapi", __name__)

# Who may call an operation:
#   api: a service token from BBSYNC_API_TOKENS;
#   catalog: a token from BBSYNC_CATALOG_TOKENS when set (the catalog is open otherwise);
#   user: a Backstage user token, checked against BBSYNC_BACKSTAGE_JWKS_URL;
#   signature: anyone, with a body signed in X-Hub-Signature (the webhook);
#   public: anyone.
Auth = Literal["api", "catalog", "user", "signature", "public"]
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "api": [{"apiToken": []}],
    "catalog": [{"catalogToken": []}, {}],
    "user": [{"backstageUserToken": []}],
    "signature": [],
    "public": [],
}
# Routes left out on purpose: none of them is the JSON API.
UNDOCUMENTED = {
    "static": "Flask's static files; bbsync serves none",
    "health.healthz": "liveness probe for the load balancer, not an API",
    "health.readyz": "readiness probe for the load balancer, not an API",
    "metrics.scrape": "Prometheus text exposition, described by its own format",
    "status_page.status": "HTML status page for people",
    "status_page.repository": "HTML status page for people",
}
# Every rule under these prefixes must be documented (tests check the document covers them).
DOCUMENTED_PREFIXES = ("/api/", "/catalog/", "/webhooks/")


@dataclass(frozen=True)
class Reply:
    """One documented answer: a schema (None for no body), its media type, a description."""

    schema: type[Schema] | Schema | dict[str, Any] | None = None
    description: str = ""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    summary: str
    auth: Auth
    responses: Mapping[int, Reply]
    query: type[Schema] | None = None
    headers: type[Schema] | None = None
    body: type[Schema] | dict[str, Any] | None = None
    description: str = ""
    etag: bool = False
    tags: tuple[str, ...] = ()


F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "openapi_operation"
ETAG_HEADER = {"ETag": "Over the content; send it back in If-None-Match"}
# Answers an auth mode adds to every operation that uses it.
AUTH_REPLIES: dict[Auth, dict[int, Reply]] = {
    "api": {401: Reply(ErrorSchema, "No valid service token")},
    "catalog": {401: Reply(ErrorSchema, "No valid catalog token (when BBSYNC_CATALOG_TOKENS)")},
    "user": {401: Reply(ErrorSchema, "No valid Backstage user token")},
    "signature": {401: Reply(ErrorSchema, "X-Hub-Signature missing or wrong")},
    "public": {},
}


def documented(
    *,
    summary: str,
    auth: Auth,
    responses: Mapping[int, Reply | type[Schema] | None],
    query: type[Schema] | None = None,
    headers: type[Schema] | None = None,
    body: type[Schema] | dict[str, Any] | None = None,
    etag: bool = False,
    tags: tuple[str, ...] = (),
) -> Callable[[F], F]:
    """Record the view's OpenAPI operation on it. A response given as a schema (or None for
    no body) is described by its HTTP status phrase. Every operation may answer 400 (invalid
    input); the auth mode adds its 401; `etag` (answers of `app.web.responses.conditional`)
    adds `If-None-Match`, the 200's `ETag` and the 304. The description is the docstring."""

    def mark(view: F) -> F:
        replies = {
            code: value if isinstance(value, Reply) else Reply(value)
            for code, value in responses.items()
        }
        # Any URL may be refused (a NUL character, `create_app`), besides invalid input.
        replies.setdefault(400, Reply(ErrorSchema, "Invalid path, query, headers or body"))
        for code, reply in AUTH_REPLIES[auth].items():
            replies.setdefault(code, reply)
        if etag:
            ok = replies[200]
            replies[200] = replace(ok, headers={**ok.headers, **ETAG_HEADER})
            replies.setdefault(
                304,
                Reply(
                    None, "Not modified: If-None-Match names the current ETag", headers=ETAG_HEADER
                ),
            )
        operation = Operation(
            summary=summary,
            auth=auth,
            responses=replies,
            query=query,
            headers=headers,
            body=body,
            etag=etag,
            description=inspect.getdoc(view) or "",
            tags=tags,
        )
        setattr(view, ATTRIBUTE, operation)
        return view

    return mark


class UndocumentedRoute(Exception):
    pass


_CONVERTER = re.compile(r"<(?:(?P<converter>[a-zA-Z_]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
_PATH_SCHEMAS = {
    "default": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    "string": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    "int": {"type": "integer", "minimum": 0},
    "path": {"type": "string", "minLength": 1},
    "workspace": {"type": "string", "minLength": 1, "pattern": f"^{WORKSPACE_PATTERN}$"},
}


def _path(rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path of a werkzeug rule and its path parameters."""
    parameters = [
        {
            "in": "path",
            "name": m["name"],
            "required": True,
            "schema": dict(_PATH_SCHEMAS[m["converter"] or "default"]),
        }
        for m in _CONVERTER.finditer(rule.rule)
    ]
    return _CONVERTER.sub(r"{\g<name>}", rule.rule), parameters


def _operation(op: Operation, path_parameters: list[dict[str, Any]]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = list(path_parameters)
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    if op.headers is not None:
        parameters.append({"in": "header", "schema": op.headers})
    if op.etag:
        parameters.append(
            {
                "in": "header",
                "name": "If-None-Match",
                "required": False,
                "description": "An ETag of an earlier answer: 304 while it is current",
                "schema": {"type": "string"},
            }
        )
    responses: dict[str, Any] = {}
    for code, reply in sorted(op.responses.items()):
        answer: dict[str, Any] = {"description": reply.description or HTTPStatus(code).phrase}
        if reply.schema is not None:
            answer["content"] = {reply.content_type: {"schema": reply.schema}}
        elif reply.content_type != "application/json":
            answer["content"] = {reply.content_type: {"schema": {"type": "string"}}}
        if reply.headers:
            answer["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in reply.headers.items()
            }
        responses[str(code)] = answer
    operation: dict[str, Any] = {
        "summary": op.summary,
        "description": op.description,
        "parameters": parameters,
        "responses": responses,
        "security": SECURITY[op.auth],
    }
    if op.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body}},
        }
    if op.tags:
        operation["tags"] = list(op.tags)
    return operation


def documented_rules(app: Any) -> list[tuple[Rule, Operation]]:
    """Each rule of the app with the operation of its view; `UndocumentedRoute` for a rule
    that has none and is not left out on purpose."""
    found: list[tuple[Rule, Operation]] = []
    missing: list[str] = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        operation = getattr(view, ATTRIBUTE, None)
        if operation is not None:
            found.append((rule, operation))
        elif rule.endpoint not in UNDOCUMENTED:
            missing.append(f"{rule.rule} ({rule.endpoint})")
    if missing:
        raise UndocumentedRoute(
            "routes without an OpenAPI operation (add @documented, or list them in "
            f"UNDOCUMENTED with the reason): {', '.join(missing)}"
        )
    return found


def build_spec() -> dict[str, Any]:
    spec = APISpec(
        title="bbsync API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Bitbucket activity, health, access and the catalog for Backstage, "
            "read from bbsync's database; and the Bitbucket webhook ingress."
        },
    )
    spec.components.security_scheme(
        "apiToken",
        {"type": "http", "scheme": "bearer", "description": "A token of BBSYNC_API_TOKENS"},
    )
    spec.components.security_scheme(
        "catalogToken",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "A token of BBSYNC_CATALOG_TOKENS; the catalog is open when unset",
        },
    )
    spec.components.security_scheme(
        "backstageUserToken",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "The Backstage user's own token (BBSYNC_BACKSTAGE_JWKS_URL)",
        },
    )
    spec.components.schema("Error", schema=ErrorSchema)
    paths: dict[str, dict[str, Any]] = {}
    path_parameters: dict[str, list[dict[str, Any]]] = {}
    for rule, operation in documented_rules(current_app):
        path, parameters = _path(rule)
        path_parameters[path] = parameters
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(operation, parameters)
    for path in sorted(paths):
        spec.path(path=path, operations=paths[path])
    document: dict[str, Any] = spec.to_dict()
    _absent_is_none(document)
    return document


def _absent_is_none(document: dict[str, Any]) -> None:
    """A query or header field loaded with `load_default=None` is None when absent; a
    parameter cannot be sent as null, so its schema says neither `nullable` nor `default`."""
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if "default" in schema and schema["default"] is None:
                    del schema["default"]
                    schema.pop("nullable", None)


@openapi.get("/api/openapi.json")
@documented(
    summary="This OpenAPI document",
    auth="public",
    responses={200: Reply({"type": "object"}, "The OpenAPI 3.0 document")},
)
def document() -> Any:
    """The OpenAPI document of every JSON endpoint and the webhook, built from the schemas
    the views validate with."""
    cached = current_app.extensions.get("bbsync.openapi")
    if cached is None:
        cached = current_app.extensions["bbsync.openapi"] = build_spec()
    return jsonify(cached)
