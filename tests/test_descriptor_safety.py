"""Descriptors are hostile input: bounded YAML, only software kinds, never bbsync's annotations.

The fuzz at the end throws aliases, deep nesting, huge scalars, odd types and many documents
at the whole path a descriptor takes (parse, screen, build the entity, serialise it): the only
outcomes are entities or one `DescriptorError`, and memory stays bounded.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.catalog.bounded_yaml import MAX_DEPTH, MAX_NODES
from app.catalog.descriptor_policy import (
    DEFAULT_DESCRIPTOR_KINDS,
    is_reserved_annotation,
    screen_descriptors,
)
from app.catalog.descriptors import DescriptorError, parse_descriptor
from app.catalog.entities import EntityBuilder, RepositoryView
from app.config import settings_from_env

LIMITS = {"max_bytes": 256 * 1024, "max_documents": 50}
HEAD = "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: billing\n"
REPO = RepositoryView(
    workspace="acme",
    slug="billing-svc",
    name="Billing",
    description="",
    language="",
    default_branch="main",
    project_key="PAY",
    project_name="Payments",
)
DERIVED = EntityBuilder(settings_from_env({})).derived_annotations(REPO, "catalog-info.yaml")


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The billion laughs: a few hundred bytes that expand to width**levels strings."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return HEAD + "spec:\n" + "".join(f"  {line}\n" for line in lines)


def test_an_alias_bomb_of_a_few_hundred_bytes_is_one_parse_error() -> None:
    text = alias_bomb()
    assert len(text) < 1024
    with pytest.raises(DescriptorError, match=r"anchors \(&name\) are not allowed at line 6"):
        parse_descriptor(text.encode(), **LIMITS)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("spec: {owner: *nowhere}\n", "aliases"),
        ("spec: &s {owner: x}\n", "anchors"),
        ("spec:\n  <<: *base\n", "aliases"),
        ("spec: " + "{a: " * (MAX_DEPTH + 1) + "x" + "}" * (MAX_DEPTH + 1) + "\n", "deeper"),
        ("spec: [" + ",".join(["1"] * MAX_NODES) + "]\n", f"more than {MAX_NODES} YAML nodes"),
        ("spec: {d: '" + "x" * 70_000 + "'}\n", "longer than 65536 characters"),
        ("spec: {due: 2026-02-31}\n", "unusable value"),
        ('spec: {d: "a\\0b"}\n', "NUL"),
        ('spec: {d: "\\ud800"}\n', "invalid YAML"),
        ("spec: {n: .nan}\n", "not finite"),
        ("spec: {b: !!binary aGVsbG8=}\n", "bytes"),
        ("spec: {s: !!set {a, b}}\n", "set"),
        ("spec: {1: one}\n", "not a string"),
        ("spec: !!python/object:os.system {}\n", "invalid YAML"),
    ],
)
def test_hostile_yaml_is_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(DescriptorError) as caught:
        parse_descriptor((HEAD + spec).encode(), **LIMITS)
    assert message in str(caught.value)


def test_plain_values_come_out_as_json_can_hold_them() -> None:
    spec = "spec: {since: 2026-02-01, big: " + "9" * 5000 + ", n: 0x1F, ok: yes}\n"
    (descriptor,) = parse_descriptor((HEAD + spec).encode(), **LIMITS)
    assert descriptor.body["spec"] == {
        "since": "2026-02-01",
        "big": "9" * 5000,
        "n": 31,
        "ok": True,
    }
    json.dumps(descriptor.body, allow_nan=False)


def document(kind: str, name: str, annotations: str = "") -> str:
    meta = f"metadata:\n  name: {name}\n" + (
        f"  annotations:\n{annotations}" if annotations else ""
    )
    return f"---\napiVersion: backstage.io/v1alpha1\nkind: {kind}\n{meta}spec: {{}}\n"


def test_people_and_unlisted_kinds_are_refused_and_the_other_documents_kept() -> None:
    text = (
        document("Component", "billing")
        + document("User", "mallory", "    bitbucket.org/user-id: '{victim}'\n")
        + document("group", "admins")
        + document("Location", "more")
        + document("API", "billing-api")
    )
    descriptors = parse_descriptor(text.encode(), **LIMITS)
    screened = screen_descriptors(descriptors, DEFAULT_DESCRIPTOR_KINDS, DERIVED)
    assert [d.ref for d in screened.descriptors] == [
        "component:default/billing",
        "api:default/billing-api",
    ]
    report = screened.report or ""
    assert "user:default/mallory: kind User is not allowed" in report
    assert "group:default/admins: kind group is not allowed" in report
    assert "location:default/more: kind Location is not allowed" in report
    opted_in = screen_descriptors(
        descriptors, (*DEFAULT_DESCRIPTOR_KINDS, "Location", "User"), DERIVED
    )
    assert "location:default/more" in [d.ref for d in opted_in.descriptors]
    assert "user:default/mallory" not in [d.ref for d in opted_in.descriptors]


@pytest.mark.parametrize(
    ("key", "reserved"),
    [
        ("bitbucket.org/user-id", True),
        ("bitbucket.org/workspace", True),
        ("Bitbucket.COM/project-slug", True),
        ("bbsync.io/managed-by", True),
        ("backstage.io/managed-by-location", True),
        ("backstage.io/managed-by-origin-location", True),
        ("backstage.io/source-location", False),
        ("backstage.io/techdocs-ref", False),
        ("github.com/project-slug", False),
    ],
)
def test_annotations_bbsync_owns(key: str, reserved: bool) -> None:
    assert is_reserved_annotation(key) is reserved


def test_bbsync_annotations_in_a_descriptor_are_dropped_reported_and_derived_instead() -> None:
    annotations = (
        "    bitbucket.org/workspace: evil\n"
        "    bitbucket.org/user-id: '{victim}'\n"
        "    backstage.io/managed-by-location: url:https://evil.example/x.yaml\n"
        "    backstage.io/techdocs-ref: dir:.\n"
        "    backstage.io/source-location: url:https://bitbucket.org/acme/billing-svc/src/main/x/\n"
    )
    descriptors = parse_descriptor(document("Component", "billing", annotations).encode(), **LIMITS)
    screened = screen_descriptors(descriptors, DEFAULT_DESCRIPTOR_KINDS, DERIVED)
    report = screened.report or ""
    assert "component:default/billing: annotations only bbsync sets were ignored" in report
    for key in ("bitbucket.org/workspace", "bitbucket.org/user-id", "managed-by-location"):
        assert key in report
    builder = EntityBuilder(settings_from_env({}))
    (descriptor,) = screened.descriptors
    built = builder.from_descriptor(descriptor, REPO, "catalog-info.yaml").body
    assert built["metadata"]["annotations"]["bitbucket.org/workspace"] == "acme"
    assert "bitbucket.org/user-id" not in built["metadata"]["annotations"]
    assert built["metadata"]["annotations"]["backstage.io/managed-by-location"] == (
        "url:https://bitbucket.org/acme/billing-svc/src/main/catalog-info.yaml"
    )
    assert built["metadata"]["annotations"]["backstage.io/techdocs-ref"] == "dir:."
    assert built["metadata"]["annotations"]["backstage.io/source-location"].endswith("/x/")
    # The builder drops them too, whoever calls it.
    (raw,) = descriptors
    unscreened = builder.from_descriptor(raw, REPO, "catalog-info.yaml").body
    assert "bitbucket.org/user-id" not in unscreened["metadata"]["annotations"]


def test_a_descriptor_restating_what_bbsync_derives_is_not_reported() -> None:
    annotations = (
        "    bitbucket.org/project-slug: acme/billing-svc\n"
        "    bitbucket.com/project-slug: acme/billing-svc\n"
        "    bitbucket.org/workspace: acme\n"
    )
    descriptors = parse_descriptor(document("Component", "billing", annotations).encode(), **LIMITS)
    screened = screen_descriptors(descriptors, DEFAULT_DESCRIPTOR_KINDS, DERIVED)
    assert screened.problems == []
    built = EntityBuilder(settings_from_env({})).from_descriptor(
        screened.descriptors[0], REPO, "catalog-info.yaml"
    )
    assert built.body["metadata"]["annotations"]["bitbucket.org/project-slug"] == "acme/billing-svc"
    other = annotations.replace("org/project-slug: acme/billing-svc", "org/project-slug: x/y")
    descriptors = parse_descriptor(document("Component", "billing", other).encode(), **LIMITS)
    screened = screen_descriptors(descriptors, DEFAULT_DESCRIPTOR_KINDS, DERIVED)
    assert screened.report == (
        "component:default/billing: annotations only bbsync sets were ignored: "
        "bitbucket.org/project-slug"
    )


def test_a_report_of_many_problems_stays_short() -> None:
    text = "".join(document("User", f"u{i}") for i in range(40))
    screened = screen_descriptors(
        parse_descriptor(text.encode(), **LIMITS), DEFAULT_DESCRIPTOR_KINDS, DERIVED
    )
    assert screened.descriptors == []
    assert len(screened.report or "") <= 2000
    assert (screened.report or "").endswith("and 30 more")


# -- the fuzz -------------------------------------------------------------------------------

scalars = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.sampled_from(["~", "yes", "0x1F", "1:2:3", "2026-02-31", ".inf", "!!binary aGk=", "*a"]),
    st.builds(lambda n: "x" * n, st.integers(0, 200_000)),
    st.builds(lambda n: "9" * n, st.integers(0, 6000)),
)


@st.composite
def hostile_yaml(draw: st.DrawFn) -> str:
    """Descriptor-shaped YAML with hostile parts spliced in."""
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 60))):
        choice = draw(st.integers(0, 6))
        if choice == 0:
            parts.append(alias_bomb(draw(st.integers(1, 12)), draw(st.integers(1, 12))))
        elif choice == 1:
            depth = draw(st.integers(1, 3000))
            parts.append(HEAD + "spec: " + "[" * depth + "]" * depth + "\n")
        elif choice == 2:
            depth = draw(st.integers(1, 80))
            parts.append(HEAD + "spec:\n" + "".join(" " * i + f"k{i}:\n" for i in range(depth)))
        elif choice == 3:
            value = draw(scalars)
            parts.append(HEAD + f"spec: {{v: {json.dumps(value)}, w: {value}}}\n")
        elif choice == 4:
            parts.append(document(draw(st.sampled_from(["User", "Group", "API", "Template"])), "n"))
        elif choice == 5:
            parts.append(draw(st.text(max_size=200)))
        else:
            parts.append(document("Component", "c", "    bitbucket.org/user-id: x\n"))
    separator = draw(st.sampled_from(["\n---\n", "\n", "\n...\n---\n"]))
    return separator.join(parts)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=hostile_yaml())
def test_hostile_descriptors_cost_one_error_at_most_and_bounded_memory(text: str) -> None:
    builder = EntityBuilder(settings_from_env({}))
    tracemalloc.start()
    try:
        try:
            descriptors = parse_descriptor(text.encode("utf-8", "surrogatepass"), **LIMITS)
        except DescriptorError as exc:
            assert str(exc)
            descriptors = []
        screened = screen_descriptors(descriptors, DEFAULT_DESCRIPTOR_KINDS, DERIVED)
        for descriptor in screened.descriptors:
            body = builder.from_descriptor(descriptor, REPO, "catalog-info.yaml").body
            json.dumps(body, allow_nan=False).encode("utf-8")
            assert not any(
                is_reserved_annotation(k)
                for k in descriptor.body["metadata"].get("annotations") or {}
            )
            assert descriptor.kind.lower() not in {"user", "group"}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 256 KiB of input never costs more than a small multiple of itself.
    assert peak < 64 * 1024 * 1024
