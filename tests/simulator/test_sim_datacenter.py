"""The Data Center flavour: paging, errors, credentials, refs, raw files, PRs, builds, limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from bitbucket_sim.testing import SimProcess

pytestmark = pytest.mark.slow

ACCESS_TOKEN = "http-access-token"
PAT = "personal-access-token"
USERNAME = "ci-user"
NON_ADMIN = "reader-token"
BEARER = {"Authorization": f"Bearer {ACCESS_TOKEN}"}


@pytest.fixture(scope="module")
def dc() -> Iterator[SimProcess]:
    with SimProcess(
        flavor="datacenter",
        repos=37,
        seed=5,
        access_token=ACCESS_TOKEN,
        username=USERNAME,
        api_token=PAT,
        non_admin_token=NON_ADMIN,
    ) as process:
        yield process


@pytest.fixture()
def api(dc: SimProcess, http: requests.Session) -> requests.Session:
    http.headers.update(BEARER)
    return http


def assert_dc_error(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert set(error) == {"context", "message", "exceptionName"}
    assert error["message"]
    return error


def first_repo(dc: SimProcess, api: requests.Session) -> dict:
    return api.get(f"{dc.rest_url}/repos", params={"limit": 1}, timeout=10).json()["values"][0]


def repo_url(dc: SimProcess, repo: dict) -> str:
    return f"{dc.rest_url}/projects/{repo['project']['key']}/repos/{repo['slug']}"


# -- paging ------------------------------------------------------------------------------------


def test_walking_repos_one_at_a_time_reaches_each_exactly_once(dc, api) -> None:
    seen, start, pages = [], 0, 0
    while True:
        page = api.get(f"{dc.rest_url}/repos", params={"limit": 4, "start": start}, timeout=10)
        body = page.json()
        pages += 1
        assert body["start"] == start and body["limit"] == 4 and body["size"] == len(body["values"])
        seen += [value["slug"] for value in body["values"]]
        if body["isLastPage"]:
            assert "nextPageStart" not in body
            break
        assert body["nextPageStart"] == start + body["size"]
        assert body["nextPageStart"] < 37
        start = body["nextPageStart"]
    assert sorted(seen) == sorted(repo["slug"] for repo in dc.repositories())
    assert len(seen) == 37 and pages == 10


def test_page_ending_exactly_at_the_end_is_the_last(dc, api) -> None:
    body = api.get(f"{dc.rest_url}/repos", params={"start": 33, "limit": 4}, timeout=10).json()
    assert body["size"] == 4 and body["isLastPage"] is True and "nextPageStart" not in body


def test_start_past_the_end_is_an_empty_last_page(dc, api) -> None:
    body = api.get(f"{dc.rest_url}/repos", params={"start": 500}, timeout=10).json()
    assert body == {"size": 0, "limit": 25, "isLastPage": True, "values": [], "start": 500}


def test_limit_is_25_by_default_and_served_at_most_1000(dc, api) -> None:
    assert api.get(f"{dc.rest_url}/repos", timeout=10).json()["limit"] == 25
    body = api.get(f"{dc.rest_url}/repos", params={"limit": 5000}, timeout=10).json()
    assert body["limit"] == 1000 and body["size"] == 37 and body["isLastPage"] is True


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "x"}, {"start": "-1"}])
def test_bad_paging_parameters_are_a_400_in_dc_shape(dc, api, params) -> None:
    assert_dc_error(api.get(f"{dc.rest_url}/repos", params=params, timeout=10), 400)


def test_unknown_project_repository_and_route_are_dc_404s(dc, api) -> None:
    error = assert_dc_error(api.get(f"{dc.rest_url}/projects/NOPE", timeout=10), 404)
    assert error["exceptionName"].endswith("NoSuchProjectException")
    repo = first_repo(dc, api)
    url = f"{dc.rest_url}/projects/{repo['project']['key']}/repos/missing"
    error = assert_dc_error(api.get(url, timeout=10), 404)
    assert error["exceptionName"].endswith("NoSuchRepositoryException")
    assert_dc_error(api.get(f"{dc.url}/rest/api/1.0/no-such-thing", timeout=10), 404)


def test_project_repos_and_the_1_0_prefix_agree(dc, api) -> None:
    projects = api.get(f"{dc.rest_url}/projects", timeout=10).json()["values"]
    total = 0
    for project in projects:
        url = f"{dc.url}/rest/api/1.0/projects/{project['key']}/repos"
        body = api.get(url, params={"limit": 1000}, timeout=10).json()
        assert all(repo["project"]["key"] == project["key"] for repo in body["values"])
        total += body["size"]
    assert total == 37


# -- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        {"headers": {"Authorization": f"Bearer {ACCESS_TOKEN}"}},
        {"headers": {"Authorization": f"Bearer {PAT}"}},
        {"auth": (USERNAME, PAT)},
        {"headers": {"Authorization": f"Bearer {NON_ADMIN}"}},
    ],
    ids=["http-access-token", "pat-bearer", "pat-basic", "non-admin"],
)
def test_each_credential_kind_is_accepted(dc, http, auth) -> None:
    assert http.get(f"{dc.rest_url}/projects", timeout=10, **auth).status_code == 200


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"headers": {"Authorization": "Bearer wrong"}},
        {"auth": (USERNAME, "wrong")},
        {"auth": ("someone-else", PAT)},
    ],
    ids=["none", "bad-bearer", "bad-password", "wrong-user"],
)
def test_anything_else_is_a_401_in_dc_shape(dc, http, auth) -> None:
    response = http.get(f"{dc.rest_url}/projects", timeout=10, **auth)
    assert_dc_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    "path",
    ["admin/groups", "admin/groups/more-members?context=developers", "admin/users"],
)
def test_admin_reads_are_open_to_licensed_users_unless_flagged(dc, http, path) -> None:
    reader = {"Authorization": f"Bearer {NON_ADMIN}"}
    url = f"{dc.rest_url}/{path}"
    assert http.get(url, headers=reader, timeout=10).status_code == 200
    dc.set_config(admin_reads_need_admin=True)
    try:
        error = assert_dc_error(http.get(url, headers=reader, timeout=10), 401)
        assert error["exceptionName"].endswith("AuthorisationException")
        assert http.get(url, headers=BEARER, timeout=10).status_code == 200
    finally:
        dc.set_config(admin_reads_need_admin=False)


def test_permissions_refuse_a_non_admin_and_the_status_is_selectable(dc, http) -> None:
    listing = http.get(f"{dc.rest_url}/repos", params={"limit": 1}, headers=BEARER, timeout=10)
    repo = listing.json()["values"][0]
    reader = {"Authorization": f"Bearer {NON_ADMIN}"}
    url = f"{repo_url(dc, repo)}/permissions/users"
    assert_dc_error(http.get(url, headers=reader, timeout=10), 401)
    dc.set_config(admin_denied_status=403)
    try:
        assert_dc_error(http.get(url, headers=reader, timeout=10), 403)
    finally:
        dc.set_config(admin_denied_status=401)
    body = http.get(url, headers=BEARER, timeout=10).json()
    assert body["values"] and all(v["permission"].startswith("REPO_") for v in body["values"])


def test_groups_and_their_members(dc, api) -> None:
    groups = api.get(f"{dc.rest_url}/admin/groups", timeout=10).json()["values"]
    assert groups and all(set(group) == {"name", "deletable"} for group in groups)
    users = {
        u["name"] for u in api.get(f"{dc.rest_url}/users?limit=1000", timeout=10).json()["values"]
    }
    url = f"{dc.rest_url}/admin/groups/more-members"
    members = api.get(url, params={"context": groups[0]["name"]}, timeout=10).json()["values"]
    assert members and {m["name"] for m in members} <= users
    assert all(m["emailAddress"] and m["slug"] == m["name"] for m in members)
    assert_dc_error(api.get(url, params={"context": "no-such-group"}, timeout=10), 400)
    names = api.get(f"{dc.rest_url}/groups", timeout=10).json()["values"]
    assert names == [group["name"] for group in groups]


# -- refs, raw files and commits ---------------------------------------------------------------


def test_default_branch_both_forms_and_branches_with_latest_commit(dc, api) -> None:
    summary = dc.repositories()[3]
    url = f"{dc.rest_url}/projects/{summary['project_key']}/repos/{summary['slug']}"
    expected = {
        "id": f"refs/heads/{summary['mainbranch']}",
        "displayId": summary["mainbranch"],
        "type": "BRANCH",
        "latestCommit": summary["head"],
        "latestChangeset": summary["head"],
        "isDefault": True,
    }
    assert api.get(f"{url}/default-branch", timeout=10).json() == expected
    assert api.get(f"{url}/branches/default", timeout=10).json() == expected
    branches = api.get(f"{url}/branches", timeout=10).json()["values"]
    assert {b["displayId"]: b["latestCommit"] for b in branches} == summary["branches"]
    assert "defaultBranch" not in api.get(url, timeout=10).json()
    dc.set_config(legacy_default_branch=False, repo_default_branch=True)
    try:
        assert_dc_error(api.get(f"{url}/branches/default", timeout=10), 404)
        assert api.get(url, timeout=10).json()["defaultBranch"] == summary["mainbranch"]
    finally:
        dc.set_config(legacy_default_branch=True, repo_default_branch=False)


def test_raw_files_follow_at(dc, api) -> None:
    summary = dc.repositories()[5]
    slug, main = summary["slug"], summary["mainbranch"]
    url = f"{dc.rest_url}/projects/{summary['project_key']}/repos/{slug}"
    pushed = dc.admin(
        "POST", f"repos/{slug}/push", json={"branch": "dc-raw", "files": {"docs/x.txt": "new\n"}}
    )
    assert pushed.status_code == 201
    head = pushed.json()["hash"]
    raw = api.get(f"{url}/raw/docs/x.txt", params={"at": "refs/heads/dc-raw"}, timeout=10)
    assert raw.status_code == 200 and raw.content == b"new\n"
    assert raw.headers["Content-Type"].startswith("text/plain")
    for at in ("dc-raw", head, head[:12]):
        assert api.get(f"{url}/raw/docs/x.txt", params={"at": at}, timeout=10).content == b"new\n"
    error = assert_dc_error(
        api.get(f"{url}/raw/docs/x.txt", params={"at": f"refs/heads/{main}"}, timeout=10), 404
    )
    assert error["exceptionName"].endswith("NoSuchPathException")
    error = assert_dc_error(api.get(f"{url}/raw/README.md", params={"at": "nope"}, timeout=10), 404)
    assert error["exceptionName"].endswith("NoSuchCommitException")
    readme = api.get(f"{url}/raw/README.md", timeout=10)  # no at: the default branch
    assert readme.status_code == 200 and readme.content.startswith(b"# ")
    assert "ETag" not in readme.headers


def test_raw_etag_when_enabled(dc, api) -> None:
    summary = dc.repositories()[6]
    url = f"{dc.rest_url}/projects/{summary['project_key']}/repos/{summary['slug']}/raw/README.md"
    dc.set_config(raw_etag=True)
    try:
        first = api.get(url, timeout=10)
        assert first.headers["ETag"] and first.headers["Last-Modified"]
        again = api.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=10)
        assert again.status_code == 304
    finally:
        dc.set_config(raw_etag=False)


def test_last_modified_commit_of_a_path(dc, api) -> None:
    summary = dc.repositories()[7]
    slug = summary["slug"]
    url = f"{dc.rest_url}/projects/{summary['project_key']}/repos/{slug}/commits"
    branch = f"refs/heads/{summary['mainbranch']}"
    params = {"until": branch, "path": "catalog-info.yaml", "limit": 1}
    changed = dc.admin("POST", f"repos/{slug}/push", json={"files": {"catalog-info.yaml": "a\n"}})
    dc.admin("POST", f"repos/{slug}/push", json={"files": {"other.txt": "b\n"}})
    body = api.get(url, params=params, timeout=10).json()
    assert [c["id"] for c in body["values"]] == [changed.json()["hash"]]
    commit = body["values"][0]
    assert commit["displayId"] == commit["id"][:11] and isinstance(commit["authorTimestamp"], int)
    newest = api.get(url, params={"until": branch, "limit": 1}, timeout=10).json()["values"][0]
    assert newest["id"] == dc.repositories()[7]["head"] != commit["id"]


def test_base_urls_and_same_seed_same_ids(dc, http) -> None:
    from bitbucket_sim.server import SimConfig, SimServer

    assert dc.api_url == dc.rest_url == dc.url + "/rest/api/latest"
    assert http.get(f"{dc.url}/2.0/repositories/acme", timeout=10).status_code == 404

    def identities(seed: int) -> list[tuple]:
        with SimServer(SimConfig(flavor="datacenter", repos=20, seed=seed)) as server:
            body = http.get(f"{server.rest_url}/repos?limit=100", timeout=10).json()
        return [(r["id"], r["slug"], r["hierarchyId"], r["project"]["id"]) for r in body["values"]]

    assert identities(4) == identities(4) != identities(5)
