"""Backstage's own Bitbucket Cloud provider, unmodified, against the simulator: its discovery
finds a location for every catalog file, at the repository's main branch, and the catalog's
URL reader reads each one, then gets a 304 for each with the ETag it was given.

Runs the Node harness of `bench/backstage_peer.py` (its npm packages are installed from the
lockfile on first use); skipped only where Node or npm is missing."""

from __future__ import annotations

import pytest

from bench.backstage_peer import HarnessUnavailable, ensure_harness, run_harness, start_simulator


def test_the_real_backstage_provider_finds_every_catalog_file() -> None:
    try:
        ensure_harness()
    except HarnessUnavailable as exc:
        pytest.skip(str(exc))
    with start_simulator(40) as sim:
        result = run_harness(sim)
        repos = sim.repositories()
    expected = sorted(
        f"https://bitbucket.org/{r['full_name']}/src/{r['mainbranch']}/{path}"
        for r in repos
        for path in r["catalog_paths"]
    )
    assert expected  # the workspace has catalog files to find
    assert sorted(result["targets"]) == expected
    assert result["locations"] == len(expected)
    phases = result["phases"]
    projects = len({r["project_key"] for r in repos})
    assert phases["discovery"]["sim_calls"] >= 1 + projects  # the project list, a search each
    assert phases["read"]["read"] == len(expected)
    assert phases["etag_read"]["not_modified"] == len(expected)
