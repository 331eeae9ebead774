"""Code search as Backstage's own Bitbucket Cloud provider uses it: one query per project
(`project:KEY`), the repository's `mainbranch`, `project` and `slug` asked for with `+fields`,
and every link excluded by wildcards except the one added back."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from bitbucket_sim.fields import FieldSpec, apply_fields
from bitbucket_sim.testing import SimProcess

# The `fields` parameter the provider sends, as it sends it.
BACKSTAGE_FIELDS = ",".join(
    [
        "-values.content_matches",
        "+values.file.commit.repository.mainbranch.name",
        "+values.file.commit.repository.project.key",
        "+values.file.commit.repository.slug",
        "-values.*.links",
        "-values.*.*.links",
        "-values.*.*.*.links",
        "+values.file.commit.repository.links.html.href",
    ]
)


def search(http: requests.Session, sim: SimProcess, query: str, fields: str) -> list[dict]:
    url = f"{sim.api_url}/workspaces/{sim.workspace}/search/code"
    response = http.get(url, params={"search_query": query, "fields": fields}, timeout=30)
    items: list[dict] = []
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["values"])
        if "next" not in page:
            return items
        response = http.get(page["next"], timeout=30)


def test_the_project_modifier_narrows_the_search_to_one_project(
    sim: SimProcess, http: requests.Session
) -> None:
    repos = sim.repositories()
    files = sorted((r["slug"], path) for r in repos for path in r["catalog_paths"])
    found: list[dict[str, Any]] = []
    for key in sorted({r["project_key"] for r in repos}):
        query = f'"catalog-info.yaml" path:catalog-info.yaml project:{key}'
        items = search(http, sim, query, BACKSTAGE_FIELDS)
        assert {i["file"]["commit"]["repository"]["project"]["key"] for i in items} <= {key}
        found.extend(items)
    assert sorted(
        (i["file"]["commit"]["repository"]["slug"], i["file"]["path"]) for i in found
    ) == (files)
    assert search(http, sim, "catalog-info.yaml project:NOSUCHKEY", "") == []


def test_the_fields_backstage_asks_for_are_there_and_no_other_link(
    sim: SimProcess, http: requests.Session
) -> None:
    repos = {r["slug"]: r for r in sim.repositories()}
    items = search(http, sim, '"catalog-info.yaml" path:catalog-info.yaml', BACKSTAGE_FIELDS)
    assert items
    for item in items:
        assert "content_matches" not in item
        assert item["path_matches"]  # the provider skips results without one
        repository = item["file"]["commit"]["repository"]
        expected = repos[repository["slug"]]
        assert repository["mainbranch"]["name"] == expected["mainbranch"]
        assert repository["project"]["key"] == expected["project_key"]
        assert repository["links"] == {
            "html": {"href": f"https://bitbucket.org/{expected['full_name']}"}
        }
        assert "links" not in item["file"] and "links" not in item["file"]["commit"]


def test_repository_extras_stay_hidden_unless_asked_for(
    sim: SimProcess, http: requests.Session
) -> None:
    (item, *_) = search(http, sim, "catalog-info.yaml", "+values.file.commit.repository")
    repository = item["file"]["commit"]["repository"]
    assert repository["full_name"] and not {"slug", "mainbranch", "project"} & set(repository)


@pytest.mark.parametrize("survive", ["wildcard", "always"])
def test_a_literal_exclusion_follows_the_flag(http: requests.Session, survive: str) -> None:
    fields = "-values.file.commit.repository.links,+values.file.commit.repository.links.html.href"
    with SimProcess(repos=4, seed=3, added_fields_survive=survive) as sim:
        (item, *_) = search(http, sim, "catalog-info.yaml", fields)
    repository = item["file"]["commit"]["repository"]
    if survive == "always":
        assert set(repository["links"]) == {"html"}
    else:
        assert "links" not in repository


def test_field_rules_on_a_document() -> None:
    doc = {"values": [{"a": {"links": {"self": 1, "html": {"href": "h"}}, "b": 2}}]}
    spec = FieldSpec.parse("-values.*.links,+values.a.links.html.href")
    assert apply_fields(doc, spec) == {
        "values": [{"a": {"links": {"html": {"href": "h"}}, "b": 2}}]
    }
    whole = FieldSpec.parse("-values.*.links,+values.a.links")
    assert apply_fields(doc, whole) == doc
    literal = FieldSpec.parse("-values.a.links,+values.a.links.html")
    assert apply_fields(doc, literal) == {"values": [{"a": {"b": 2}}]}
    assert apply_fields(doc, literal, survive="always") == {
        "values": [{"a": {"links": {"html": {"href": "h"}}, "b": 2}}]
    }
