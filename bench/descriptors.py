"""Descriptor parsing under the bounds: what a legitimate file and hostile ones cost.

For each input: its size, the outcome (entities or the one error), the median wall time of
`parse_descriptor` over a few runs and the peak memory Python allocated (tracemalloc). The
baseline is libyaml's plain `CSafeLoader` on the same legitimate file, measured in the same
run: the price of the bounds. The alias bomb is shown only under the bounds (without them,
walking the result costs gigabytes).

    python -m bench.descriptors

Figures, not pass/fail.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import yaml

from app.catalog.bounded_yaml import MAX_DEPTH, MAX_NODES
from app.catalog.descriptors import DescriptorError, parse_descriptor

LIMITS = {"max_bytes": 256 * 1024, "max_documents": 50}
RUNS = 7


def legitimate(documents: int = 50) -> str:
    """A 50-entity file of realistic shape, padded with descriptions to ~250 KB."""
    parts = []
    for i in range(documents):
        parts.append(
            "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n"
            f"  name: svc-{i}\n  description: {'A service that does things. ' * 160}\n"
            "  tags: [python, web]\n  annotations:\n    backstage.io/techdocs-ref: dir:.\n"
            f"  links:\n    - url: https://example.com/{i}\n      title: Docs\n"
            f"spec:\n  type: service\n  lifecycle: production\n  owner: group:default/t{i}\n"
            f"  providesApis: [api-{i}]\n  dependsOn: [resource:default/db-{i}]\n"
        )
    return "---\n".join(parts)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, levels)]
    return "apiVersion: a/b\nkind: Component\nmetadata: {name: x}\nspec:\n" + "".join(
        f"  {line}\n" for line in lines
    )


def measure(function: Callable[[], Any]) -> tuple[str, float, float]:
    times = []
    outcome = ""
    for _ in range(RUNS):
        started = time.perf_counter()
        try:
            outcome = f"{len(function())} entities"
        except DescriptorError as exc:
            outcome = f"error: {str(exc)[:60]}"
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    with contextlib.suppress(DescriptorError):
        function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return outcome, statistics.median(times) * 1000, peak / 1e6


def main() -> None:
    print("descriptor parsing (median of 7 runs; peak Python memory)")
    good = legitimate()
    inputs = {
        "legitimate, 50 entities": good,
        "alias bomb (9 levels x 9)": alias_bomb(),
        f"nested {MAX_DEPTH + 1} levels": "x: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        "libyaml's own depth limit": "x: " + "[" * 100_000 + "]" * 100_000,
        f"{MAX_NODES + 1} nodes": "x: [" + ",".join(["1"] * MAX_NODES) + "]",
        "one 250 KB value": "x: '" + "y" * 250_000 + "'",
    }
    baseline = measure(lambda: list(yaml.load_all(good, Loader=yaml.CSafeLoader)))
    print(
        f"  {'baseline: CSafeLoader, legitimate':<36} {len(good):>8} B  "
        f"{baseline[1]:8.1f} ms  {baseline[2]:7.1f} MB  {baseline[0]}"
    )
    for name, text in inputs.items():
        data = text.encode()
        outcome, ms, mb = measure(functools.partial(parse_descriptor, data, **LIMITS))
        print(f"  {name:<36} {len(data):>8} B  {ms:8.1f} ms  {mb:7.1f} MB  {outcome}")


if __name__ == "__main__":
    main()
