"""Pagination, pagelen caps, BBQL filters, sorting and partial responses."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlparse

import pytest
import requests

from bitbucket_sim.testing import SimProcess

pytestmark = pytest.mark.slow

REPOSITORY_FIELDS = set(
    [
        "uuid",
        "full_name",
        "slug",
        "name",
        "description",
        "is_private",
        "language",
        "size",
        "created_on",
        "updated_on",
        "mainbranch",
        "project",
        "links",
        "parent",
    ]
)


def follow(http: requests.Session, url: str, **params: object) -> tuple[list[dict], list[dict]]:
    """Every item and every page envelope, following `next` until it is absent."""
    items: list[dict] = []
    pages: list[dict] = []
    response = http.get(url, params=params, timeout=10)
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        items += page["values"]
        if "next" not in page:
            return items, pages
        response = http.get(page["next"], timeout=10)


def test_repository_pages_follow_absolute_next_links_to_the_end(sim: SimProcess, http) -> None:
    items, pages = follow(http, f"{sim.api_url}/repositories/{sim.workspace}", pagelen=10)
    slugs = [item["slug"] for item in items]
    assert len(slugs) == 45
    assert len(set(slugs)) == 45
    assert len(pages) == 5
    assert "next" not in pages[-1]
    for page in pages[:-1]:
        link = urlparse(page["next"])
        assert f"{link.scheme}://{link.netloc}" == sim.url
        assert "after=" in link.query and "page=" not in link.query
    assert pages[0]["size"] == 45 and pages[0]["pagelen"] == 10


def test_repository_object_has_the_documented_fields(sim: SimProcess, http) -> None:
    repo = http.get(f"{sim.api_url}/repositories/{sim.workspace}", timeout=10).json()["values"][0]
    assert set(repo) >= REPOSITORY_FIELDS
    assert repo["type"] == "repository"
    assert repo["uuid"].startswith("{") and repo["uuid"].endswith("}")
    assert repo["full_name"] == f"{sim.workspace}/{repo['slug']}"
    assert repo["mainbranch"]["type"] == "branch"
    assert repo["links"]["html"]["href"] == f"https://bitbucket.org/{repo['full_name']}"
    assert repo["links"]["self"]["href"].startswith(sim.url)
    assert repo["updated_on"].endswith("+00:00") and "." in repo["updated_on"]
    assert repo["owner"]["type"] == "team"


def test_pagelen_over_100_is_rejected(sim: SimProcess, http) -> None:
    response = http.get(f"{sim.api_url}/repositories/{sim.workspace}?pagelen=101", timeout=10)
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    ok = http.get(f"{sim.api_url}/repositories/{sim.workspace}?pagelen=100", timeout=10)
    assert ok.status_code == 200 and len(ok.json()["values"]) == 45


def test_pull_request_pagelen_over_50_is_rejected(sim: SimProcess, http) -> None:
    slug = sim.repositories()[0]["slug"]
    url = f"{sim.api_url}/repositories/{sim.workspace}/{slug}/pullrequests"
    assert http.get(url, params={"pagelen": 51}, timeout=10).status_code == 400
    assert http.get(url, params={"pagelen": 50}, timeout=10).status_code == 200


def test_pagelen_cap_can_clamp_instead() -> None:
    with SimProcess(repos=120, seed=3, pagelen_over_cap="clamp") as sim:
        page = requests.get(
            f"{sim.api_url}/repositories/{sim.workspace}?pagelen=500", timeout=10
        ).json()
        assert page["pagelen"] == 100 and len(page["values"]) == 100


def test_query_on_updated_on_filters(sim: SimProcess, http) -> None:
    url = f"{sim.api_url}/repositories/{sim.workspace}"
    everything, _ = follow(http, url, pagelen=100)
    moments = sorted(datetime.fromisoformat(item["updated_on"]) for item in everything)
    cut = moments[len(moments) // 2]
    expected = {i["slug"] for i in everything if datetime.fromisoformat(i["updated_on"]) > cut}
    quoted, _ = follow(http, url, q=f'updated_on > "{cut.isoformat()}"', pagelen=100)
    bare, _ = follow(http, url, q=f"updated_on > {cut.isoformat()}", pagelen=100)
    assert {i["slug"] for i in quoted} == expected
    assert {i["slug"] for i in bare} == expected
    assert 0 < len(expected) < len(everything)
    both, _ = follow(
        http,
        url,
        q=f'updated_on >= "{moments[0].isoformat()}" AND updated_on <= "{cut.isoformat()}"',
    )
    assert len(both) == len(everything) - len(expected)


def test_unencoded_plus_in_timestamp_is_understood(sim: SimProcess, http) -> None:
    url = (
        f"{sim.api_url}/repositories/{sim.workspace}?q=updated_on%20%3E%202020-01-01T00:00:00+00:00"
    )
    response = http.get(url, timeout=10)
    assert response.status_code == 200 and response.json()["size"] == 45


def test_sort_by_updated_on_descending(sim: SimProcess, http) -> None:
    items, _ = follow(
        http, f"{sim.api_url}/repositories/{sim.workspace}", sort="-updated_on", pagelen=7
    )
    stamps = [item["updated_on"] for item in items]
    assert stamps == sorted(stamps, reverse=True) and len(items) == 45


def test_name_contains_and_project_key_filters(sim: SimProcess, http) -> None:
    url = f"{sim.api_url}/repositories/{sim.workspace}"
    svc, _ = follow(http, url, q='name ~ "svc"', pagelen=100)
    assert svc and all("svc" in item["name"].lower() for item in svc)
    key = svc[0]["project"]["key"]
    in_project, _ = follow(http, url, q=f'project.key = "{key}"', pagelen=100)
    assert in_project and all(item["project"]["key"] == key for item in in_project)


def test_invalid_query_is_a_400(sim: SimProcess, http) -> None:
    url = f"{sim.api_url}/repositories/{sim.workspace}"
    assert http.get(url, params={"q": "updated_on >"}, timeout=10).status_code == 400
    assert http.get(url, params={"q": 'nonsense = "x"'}, timeout=10).status_code == 400


def test_fields_minus_links_drops_links(sim: SimProcess, http) -> None:
    page = http.get(
        f"{sim.api_url}/repositories/{sim.workspace}",
        params={"fields": "-values.links"},
        timeout=10,
    ).json()
    assert page["values"] and all("links" not in item for item in page["values"])
    assert "next" in page and "uuid" in page["values"][0]


def test_explicit_fields_keep_only_what_was_asked(sim: SimProcess, http) -> None:
    page = http.get(
        f"{sim.api_url}/repositories/{sim.workspace}",
        params={"fields": "values.uuid,values.slug,next"},
        timeout=10,
    ).json()
    assert set(page) == {"values", "next"}
    assert all(set(item) == {"uuid", "slug"} for item in page["values"])


def test_pull_requests_default_to_open_and_accept_repeated_states(sim: SimProcess, http) -> None:
    seen_states: set[str] = set()
    for summary in sim.repositories()[:15]:
        url = f"{sim.api_url}/repositories/{sim.workspace}/{summary['slug']}/pullrequests"
        default = http.get(url, timeout=10).json()["values"]
        assert all(pr["state"] == "OPEN" for pr in default)
        assert all("participants" not in pr and "reviewers" not in pr for pr in default)
        states = ["OPEN", "MERGED", "DECLINED", "SUPERSEDED"]
        every = http.get(url, params={"state": states}, timeout=10).json()["values"]
        seen_states |= {pr["state"] for pr in every}
        for pr in every:
            assert len(pr["source"]["commit"]["hash"]) == 12
            assert (pr["merge_commit"] is None) == (pr["state"] != "MERGED")
            single = http.get(pr["links"]["self"]["href"], timeout=10).json()
            assert "participants" in single and "reviewers" in single
    assert {"OPEN", "MERGED"} <= seen_states
