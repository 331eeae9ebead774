"""Push in Bitbucket -> entity changed in Backstage's own catalog API, two ways at once.

One bbsync (gunicorn web + Celery worker, PostgreSQL, the simulator with bbsync's hook) and two
real Backstage backends (`backstage/packages/backend`, `backstage-cli package start`, each on
its own PostgreSQL databases) reading it:

- provider: bbsync's catalog provider module (`catalog.providers.bbsync`, change feed polled
  every 2 s: a full mutation at start, then deltas);
- url: the zero-install `url` location on `/catalog/entities.yaml`, at Backstage's default
  processing interval (each entity re-processed every 100-150 s).

`--pushes` (default 50) simulator pushes, one every `--every` s (default 3), rotating over the
repositories with a root `catalog-info.yaml`; each writes a descriptor with a new
`metadata.name`, and each backend's catalog API (`GET /api/catalog/entities`, polled every
0.5 s) is watched until that name appears (or the name of a later push to the same
repository: the edit was superseded before Backstage read it). The clock runs from just before
the push. Both backends see the same pushes, so the two columns are measured the same way.
Printed: p50, p95 and max per path, and pushes not seen within `--timeout` s (default 300).
Figures, not pass/fail.

    python -m bench.backstage_freshness [--pushes 50] [--every 3]

Needs `make backstage-install`, PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379
(database 13 by default, `BBSYNC_BENCH_BACKSTAGE_REDIS`; it is flushed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault(
    "BBSYNC_TEST_REDIS",
    os.environ.get("BBSYNC_BENCH_BACKSTAGE_REDIS", "redis://127.0.0.1:6379/13"),
)

from bench.system import percentile
from tests.test_backstage_e2e import (
    CLI,
    Backstage,
    _config,
    running_backstage,
)
from tests.test_webhook_flow import (
    System,
    descriptor,
    free_port,
    layout,
    running_system,
)

POLL_SECONDS = 0.5


def _url_location(path: Path, bbsync_url: str) -> None:
    host = bbsync_url.split("://", 1)[1]
    path.write_text(
        f"""
catalog:
  locations:
    - type: url
      target: {bbsync_url}/catalog/entities.yaml
      rules:
        - allow: [Component, API, System, Domain, Resource, Group, User, Location]
backend:
  reading:
    allow:
      - host: {host}
"""
    )


def _provider_every_2s(path: Path) -> None:
    path.write_text(
        "catalog:\n  providers:\n    bbsync:\n"
        "      schedule: {frequency: {seconds: 2}, timeout: {minutes: 1}}\n"
    )


@contextmanager
def _backstage(system: System, work: Path, name: str, extra: Path) -> Iterator[Backstage]:
    port = free_port()
    prefix = f"bbsync_bench_{name}_{uuid.uuid4().hex[:8]}_"
    base = work / f"{name}.yaml"
    _config(base, port, prefix, system.web_url, provider=name == "provider")
    with running_backstage([base, extra], port, prefix, work / f"{name}.log") as backstage:
        yield backstage


def measure(pushes: int, every: float, timeout: float) -> dict[str, list[float | None]]:
    if not CLI.exists():
        raise SystemExit("Backstage packages are not installed: run `make backstage-install`")
    work = Path(tempfile.mkdtemp(prefix="bbsync-bench-backstage-"))
    coalesce = {"BBSYNC_PUSH_COALESCE_SECONDS": "5"}  # bbsync's default
    with running_system(work, coalesce) as system, ExitStack() as stack:
        _provider_every_2s(work / "provider-extra.yaml")
        _url_location(work / "url-extra.yaml", system.web_url)
        backends = {
            name: stack.enter_context(_backstage(system, work, name, work / f"{name}-extra.yaml"))
            for name in ("provider", "url")
        }
        repos = layout(system.sim, "single")
        names = {e["metadata"]["name"] for e in system.entities(kind="Component")}
        for name, backstage in backends.items():
            _until_all(backstage, {f"component:default/{n}".lower() for n in names}, 600, name)
        run = uuid.uuid4().hex[:6]
        pushed: list[tuple[str, float]] = []
        seen: dict[str, dict[str, float]] = {name: {} for name in backends}
        next_push = time.monotonic()
        while len(pushed) < pushes or _pending(pushed, seen, timeout):
            now = time.monotonic()
            if len(pushed) < pushes and now >= next_push:
                repo = repos[len(pushed) % len(repos)]
                entity = f"fresh-{run}-{len(pushed)}"
                started = time.monotonic()
                system.sim.admin(
                    "POST",
                    f"repos/{repo['slug']}/push",
                    json={"files": {"catalog-info.yaml": descriptor(entity)}},
                )
                pushed.append((f"component:default/{entity}", started))
                next_push += every
            for name, backstage in backends.items():
                refs = _refs(backstage)
                now = time.monotonic()
                for index, (ref, started) in enumerate(pushed):
                    if ref not in seen[name] and ref in refs:
                        seen[name][ref] = now - started
                        # Earlier pushes to the same repository are visible too: superseded
                        # before Backstage read them (in practice on the url path).
                        for ref_before, started_before in pushed[
                            index % len(repos) : index : len(repos)
                        ]:
                            seen[name].setdefault(ref_before, now - started_before)
            time.sleep(POLL_SECONDS)
    return {name: [seen[name].get(ref) for ref, _ in pushed] for name in backends}


def _pending(
    pushed: list[tuple[str, float]], seen: dict[str, dict[str, float]], timeout: float
) -> bool:
    now = time.monotonic()
    return any(
        ref not in got and now - started < timeout
        for got in seen.values()
        for ref, started in pushed
    )


def _refs(backstage: Backstage) -> set[str]:
    return backstage.refs()


def _until_all(backstage: Backstage, refs: set[str], timeout: float, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if refs <= backstage.refs():
            return
        time.sleep(1)
    raise SystemExit(f"{name}: Backstage did not hold bbsync's entities within {timeout}s")


def report(results: dict[str, list[float | None]], every: float) -> None:
    print(
        f"\nBackstage freshness: push -> entity in Backstage's catalog API "
        f"({len(next(iter(results.values())))} pushes, one every {every:g} s, polled every "
        f"{POLL_SECONDS:g} s)"
    )
    print(f"  {'path':<44} {'p50':>7} {'p95':>7} {'max':>7}  missed")
    labels = {
        "provider": "bbsync provider module (change feed, 2 s)",
        "url": "url location (default processing interval)",
    }
    for name, times in results.items():
        got = [t for t in times if t is not None]
        missed = len(times) - len(got)
        if not got:
            print(f"  {labels[name]:<44} {'-':>7} {'-':>7} {'-':>7}  {missed}")
            continue
        print(
            f"  {labels[name]:<44} {percentile(got, 50):6.1f}s {percentile(got, 95):6.1f}s "
            f"{max(got):6.1f}s  {missed}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pushes", type=int, default=50)
    parser.add_argument("--every", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    report(measure(args.pushes, args.every, args.timeout), args.every)


if __name__ == "__main__":
    main()
