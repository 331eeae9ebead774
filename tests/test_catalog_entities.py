"""Descriptor parsing under limits, and the entities bbsync builds around them."""

from __future__ import annotations

import pytest

from app.catalog.descriptors import DescriptorError, entity_name, parse_descriptor
from app.catalog.entities import EntityBuilder, RepositoryView
from app.config import settings_from_env
from app.sync.catalog.search import path_matches, search_term

LIMITS = {"max_bytes": 4096, "max_documents": 3}
COMPONENT = (
    "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: billing\n"
    "spec:\n  type: service\n  lifecycle: production\n  owner: group:default/pay\n"
)
REPO = RepositoryView(
    workspace="acme",
    slug="billing-svc",
    name="Billing Service",
    description="Bills.",
    language="Python",
    default_branch="main",
    project_key="PAY",
    project_name="Payments",
)


def test_several_documents_and_empty_ones_are_read() -> None:
    text = f"---\n{COMPONENT}---\n---\n{COMPONENT.replace('billing', 'ledger')}"
    names = [d.name for d in parse_descriptor(text.encode(), **LIMITS)]
    assert names == ["billing", "ledger"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"kind: [unclosed", "invalid YAML at line "),
        (b"- just\n- a list\n", "document 1: not a mapping"),
        (b"apiVersion: v1\nkind: Component\nmetadata: {name: x}\n", "apiVersion"),
        (COMPONENT.replace("name: billing", "name: bad name!").encode(), "metadata.name"),
        (COMPONENT.replace("kind: Component", "kind: 9lives").encode(), "kind"),
        (b"", "no entity"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x" * 5000, "more than the 4096 allowed"),
        ((f"---\n{COMPONENT}" * 4).encode(), "more than 3 YAML documents"),
        (b"!!python/object:os.system {}", "invalid YAML"),
    ],
)
def test_a_bad_descriptor_is_one_clear_error(content: bytes, message: str) -> None:
    with pytest.raises(DescriptorError) as caught:
        parse_descriptor(content, **LIMITS)
    assert message in str(caught.value)


def test_bad_annotations_are_refused() -> None:
    text = COMPONENT.replace("metadata:\n", "metadata:\n  annotations:\n    a: 1\n")
    with pytest.raises(DescriptorError, match="annotations"):
        parse_descriptor(text.encode(), **LIMITS)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("svc-0001", "svc-0001"),
        ("My Repo!!", "my-repo"),
        ("--x--", "x"),
        ("a" * 80, "a" * 63),
        ("***", "unnamed"),
    ],
)
def test_entity_names_follow_backstage_rules(text: str, name: str) -> None:
    assert entity_name(text) == name


def test_descriptor_values_win_over_generated_annotations() -> None:
    builder = EntityBuilder(settings_from_env({}))
    text = COMPONENT.replace(
        "metadata:\n", "metadata:\n  annotations:\n    backstage.io/source-location: url:x\n"
    )
    (descriptor,) = parse_descriptor(text.encode(), **LIMITS)
    entity = builder.from_descriptor(descriptor, REPO, "services/api/catalog-info.yaml")
    annotations = entity.body["metadata"]["annotations"]
    assert annotations["backstage.io/source-location"] == "url:x"
    assert annotations["backstage.io/view-url"] == (
        "https://bitbucket.org/acme/billing-svc/src/main/services/api/catalog-info.yaml"
    )
    assert annotations["bitbucket.com/project-slug"] == "acme/billing-svc"
    assert entity.ref == "component:default/billing"
    assert "annotations" not in descriptor.body["metadata"] or (
        "bitbucket.org/repo-url" not in descriptor.body["metadata"]["annotations"]
    )


def test_generated_component_settings_are_honoured() -> None:
    builder = EntityBuilder(
        settings_from_env(
            {
                "BBSYNC_COMPONENT_TYPE": "library",
                "BBSYNC_COMPONENT_LIFECYCLE": "experimental",
                "BBSYNC_COMPONENT_OWNER": "group:default/platform",
            }
        )
    )
    entity = builder.generated_component(REPO)
    assert entity.body["spec"] == {
        "type": "library",
        "lifecycle": "experimental",
        "owner": "group:default/platform",
    }
    assert entity.body["metadata"]["title"] == "Billing Service"
    assert entity.body["metadata"]["tags"] == ["python"]
    default = EntityBuilder(settings_from_env({})).generated_component(REPO)
    assert default.body["spec"]["owner"] == "group:default/acme-pay"


@pytest.mark.parametrize(
    ("path", "patterns", "matches"),
    [
        ("catalog-info.yaml", ("catalog-info.yaml",), True),
        ("services/api/catalog-info.yaml", ("catalog-info.yaml",), False),
        ("services/api/catalog-info.yaml", ("**/catalog-info.yaml",), True),
        ("catalog-info.yaml", ("**/catalog-info.yaml",), True),
        ("services/api/catalog-info.yaml", ("services/*/catalog-info.yaml",), True),
    ],
)
def test_catalog_path_patterns(path: str, patterns: tuple[str, ...], matches: bool) -> None:
    assert path_matches(path, patterns) is matches


def test_search_terms_for_patterns() -> None:
    assert search_term("catalog-info.yaml") == "path:catalog-info.yaml"
    assert search_term("**/catalog-info.yaml") == "path:catalog-info.yaml"
    assert search_term("backstage/*.yaml") == "ext:yaml"
