"""Code search: filters, the 1,000-result cap, repeated items and the disabled case."""

from __future__ import annotations

import pytest

from bitbucket_sim.testing import SimProcess

pytestmark = pytest.mark.slow


def search_url(sim: SimProcess) -> str:
    return f"{sim.api_url}/workspaces/{sim.workspace}/search/code"


def collect(http, sim: SimProcess, query: str, **params: object) -> tuple[list[dict], list[dict]]:
    pages: list[dict] = []
    response = http.get(search_url(sim), params={"search_query": query, **params}, timeout=30)
    while True:
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if "next" not in pages[-1]:
            return [item for page in pages for item in page["values"]], pages
        response = http.get(pages[-1]["next"], timeout=30)


def test_search_results_stop_at_1000_but_size_is_the_true_count(http) -> None:
    with SimProcess(repos=1200, seed=2) as sim:
        items, pages = collect(http, sim, '"getting started" path:README.md', pagelen=100)
        assert pages[0]["size"] == 1200
        assert len(items) == 1000
        assert len(pages) == 10 and "next" not in pages[-1]
        assert all(item["file"]["path"] == "README.md" for item in items)
        keys = {(item["file"]["commit"]["hash"], item["file"]["path"]) for item in items}
        assert len(keys) == 1000


def test_search_filters_and_result_shape(sim: SimProcess, http) -> None:
    items, pages = collect(http, sim, "catalog-info.yaml path:catalog-info.yaml", pagelen=100)
    expected = sum(1 for r in sim.repositories() if r["catalog_paths"])
    assert pages[0]["size"] == expected == len(items)
    result = items[0]
    assert result["type"] == "code_search_result"
    assert {"content_match_count", "path_matches", "file"} <= set(result)
    assert result["file"]["type"] == "commit_file"
    assert len(result["file"]["commit"]["hash"]) == 40
    assert "repository" not in result["file"]["commit"]
    slug = sim.repositories()[0]["slug"]
    only_one, _ = collect(http, sim, f"getting repo:{slug} path:README.md")
    assert len(only_one) == 1


def test_repository_is_included_only_when_asked(sim: SimProcess, http) -> None:
    page = http.get(
        search_url(sim),
        params={
            "search_query": "getting path:README.md",
            "fields": "+values.file.commit.repository",
        },
        timeout=10,
    ).json()
    repository = page["values"][0]["file"]["commit"]["repository"]
    assert repository["full_name"].startswith(f"{sim.workspace}/")


def test_search_query_is_required(sim: SimProcess, http) -> None:
    response = http.get(search_url(sim), timeout=10)
    assert response.status_code == 400 and response.json()["type"] == "error"


def test_pages_may_repeat_an_item_when_configured(http) -> None:
    with SimProcess(repos=60, seed=4, search_repeats_items=True) as sim:
        items, pages = collect(http, sim, "getting path:README.md", pagelen=10)
        paths = [(i["file"]["commit"]["hash"], i["file"]["path"]) for i in items]
        assert len(paths) > len(set(paths))  # some item came twice
        assert len(set(paths)) == pages[0]["size"] == 60  # and none was lost


def test_disabled_code_search_answers_with_an_error(http) -> None:
    with SimProcess(repos=3, seed=1, code_search=False) as sim:
        response = http.get(search_url(sim), params={"search_query": "x"}, timeout=10)
        assert response.status_code in (403, 404)
        assert response.json()["type"] == "error"
