"""Raw file contents, ETags, directory listings and refs."""

from __future__ import annotations

import pytest
import yaml

from bitbucket_sim.testing import SimProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files_sim():
    """A simulator this module may change (pushes)."""
    with SimProcess(repos=25, seed=11) as process:
        yield process


def src_url(sim: SimProcess, slug: str, ref: str, path: str) -> str:
    return f"{sim.api_url}/repositories/{sim.workspace}/{slug}/src/{ref}/{path}"


def test_raw_file_has_an_etag_and_answers_304_when_it_matches(files_sim, http) -> None:
    repo = files_sim.repositories()[0]
    url = src_url(files_sim, repo["slug"], repo["mainbranch"], "README.md")
    first = http.get(url, timeout=10)
    assert first.status_code == 200
    assert first.headers["Content-Type"] == "text/plain"
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = http.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag
    by_hash = http.get(src_url(files_sim, repo["slug"], repo["head"], "README.md"), timeout=10)
    assert by_hash.headers["ETag"] == etag  # the ETag follows the content, not the ref


def test_etag_changes_with_content_and_old_commits_stay_readable(files_sim, http) -> None:
    repo = files_sim.repositories()[1]
    url = src_url(files_sim, repo["slug"], repo["mainbranch"], "README.md")
    before = http.get(url, timeout=10)
    pushed = files_sim.admin(
        "POST", f"repos/{repo['slug']}/push", json={"files": {"README.md": "# rewritten\n"}}
    )
    assert pushed.status_code == 201
    after = http.get(url, headers={"If-None-Match": before.headers["ETag"]}, timeout=10)
    assert after.status_code == 200 and after.text == "# rewritten\n"
    assert after.headers["ETag"] != before.headers["ETag"]
    old = http.get(src_url(files_sim, repo["slug"], repo["head"], "README.md"), timeout=10)
    assert old.content == before.content


def test_missing_file_is_a_404_with_an_error_body(files_sim, http) -> None:
    repo = files_sim.repositories()[0]
    response = http.get(
        src_url(files_sim, repo["slug"], repo["mainbranch"], "nope.yaml"), timeout=10
    )
    assert response.status_code == 404
    assert response.json()["type"] == "error"
    unknown_repo = http.get(src_url(files_sim, "no-such-repo", "main", "README.md"), timeout=10)
    assert unknown_repo.status_code == 404


def test_directory_path_lists_files_and_directories(files_sim, http) -> None:
    repo = files_sim.repositories()[0]
    listing = http.get(src_url(files_sim, repo["slug"], repo["mainbranch"], ""), timeout=10).json()
    kinds = {entry["path"]: entry["type"] for entry in listing["values"]}
    assert kinds["README.md"] == "commit_file"
    assert kinds["src"] == "commit_directory"
    inner = http.get(
        src_url(files_sim, repo["slug"], repo["mainbranch"], "src/"), timeout=10
    ).json()
    assert [entry["path"] for entry in inner["values"]] == ["src/main.py"]


def test_branch_names_with_slashes_resolve(files_sim, http) -> None:
    repo = next(r for r in files_sim.repositories() if any("/" in b for b in r["branches"]))
    branch = next(b for b in repo["branches"] if "/" in b)
    response = http.get(src_url(files_sim, repo["slug"], branch, "src/main.py"), timeout=10)
    assert response.status_code == 200 and b"def main" in response.content
    ref = http.get(
        f"{files_sim.api_url}/repositories/{files_sim.workspace}/{repo['slug']}/refs/branches/{branch}",
        timeout=10,
    ).json()
    assert ref["name"] == branch and len(ref["target"]["hash"]) == 40
    assert ref["target"]["type"] == "commit"


def test_catalog_descriptors_come_in_every_documented_layout() -> None:
    with SimProcess(repos=200, seed=5) as sim:
        summaries = sim.repositories()
        layouts = [r["catalog_layout"] for r in summaries]
        at_root = sum(layout in ("single", "multi", "malformed") for layout in layouts)
        assert 0.45 < at_root / len(layouts) < 0.75
        assert {"single", "multi", "malformed", "nested", "none"} <= set(layouts)
        for summary in summaries:
            if summary["catalog_layout"] in ("none",):
                assert summary["catalog_paths"] == []
                continue
            (path,) = summary["catalog_paths"]
            text = sim.session.get(
                src_url(sim, summary["slug"], summary["mainbranch"], path), timeout=10
            ).text
            if summary["catalog_layout"] == "malformed":
                with pytest.raises(yaml.YAMLError):
                    list(yaml.safe_load_all(text))
                continue
            documents = list(yaml.safe_load_all(text))
            assert (len(documents) > 1) == (summary["catalog_layout"] == "multi")
            for document in documents:
                assert document["apiVersion"] == "backstage.io/v1alpha1"
                assert document["kind"] in ("Component", "API", "System")
                assert document["metadata"]["name"]
                assert document["spec"]["owner"]
