"""`/_sim/stats`: calls per endpoint family, 429s apart, admin calls never counted."""

from __future__ import annotations

import pytest

from bitbucket_sim.testing import SimProcess

pytestmark = pytest.mark.slow

FAMILIES = set(
    [
        "repositories",
        "refs",
        "src",
        "search",
        "pullrequests",
        "pipelines",
        "statuses",
        "members",
        "permissions",
        "groups",
        "hooks",
        "workspaces",
        "oauth",
    ]
)


def test_each_endpoint_counts_in_its_family_and_reset_zeroes(http) -> None:
    with SimProcess(repos=6, seed=9) as sim:
        ws, api = sim.workspace, sim.api_url
        repo = sim.repositories()[0]
        base = f"{api}/repositories/{ws}/{repo['slug']}"
        calls = {
            "repositories": [f"{api}/repositories/{ws}", base],
            "refs": [f"{base}/refs/branches", f"{base}/refs/branches/{repo['mainbranch']}"],
            "src": [f"{base}/src/{repo['head']}/README.md"],
            "search": [f"{api}/workspaces/{ws}/search/code?search_query=main"],
            "pullrequests": [f"{base}/pullrequests"],
            "pipelines": [f"{base}/pipelines/"],
            "statuses": [f"{base}/commit/{repo['head']}/statuses"],
            "members": [f"{api}/workspaces/{ws}/members"],
            "permissions": [
                f"{api}/workspaces/{ws}/permissions/repositories",
                f"{base}/permissions-config/users",
                f"{base}/permissions-config/groups",
            ],
            "groups": [f"{sim.url}/1.0/groups/{ws}"],
            "hooks": [f"{api}/workspaces/{ws}/hooks", f"{base}/hooks"],
            "workspaces": [f"{api}/workspaces/{ws}", f"{api}/workspaces/{ws}/projects"],
        }
        for urls in calls.values():
            for url in urls:
                assert http.get(url, timeout=10).status_code == 200, url
        grant = {"grant_type": "client_credentials"}
        token = http.post(sim.token_url, data=grant, auth=("any", "thing"), timeout=10)
        assert token.status_code == 200
        sim.admin("GET", "repos")  # admin calls are free
        stats = sim.stats()
        assert set(stats["calls"]) >= FAMILIES
        for family, urls in calls.items():
            assert stats["calls"][family] == len(urls), family
        assert stats["calls"]["oauth"] == 1
        assert stats["calls_total"] == sum(len(urls) for urls in calls.values()) + 1
        assert stats["rate_limited"] == 0
        reset = sim.reset_stats()
        assert reset["calls_total"] == 0 and set(reset["calls"].values()) == {0}
