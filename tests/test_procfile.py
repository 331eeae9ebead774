"""The worker and beat the tests and benchmarks start (`bench/processes.py`) are the
Procfile's, so what they exercise is what a deployment runs."""

from __future__ import annotations

import re
import shlex
import sys

from bench.processes import celery_beat, celery_worker
from tests.conftest import ROOT


def procfile(process: str, **env: str) -> list[str]:
    """The Procfile's command for `process`, `${NAME:-default}` expanded from `env` or its
    default, as the shell that runs it would."""
    line = next(
        line.split(":", 1)[1]
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith(f"{process}:")
    )
    expanded = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1), m.group(2)), line)
    return shlex.split(expanded)


def test_the_worker_started_by_tests_is_the_procfiles() -> None:
    args = celery_worker(3)
    assert args[:3] == [sys.executable, "-m", "celery"]
    assert ["celery", *args[3:]] == procfile("worker", WORKER_CONCURRENCY="3")


def test_the_beat_started_by_tests_is_the_procfiles() -> None:
    args = celery_beat("/tmp/schedule")
    assert ["celery", *args[3:]] == procfile("beat", BEAT_SCHEDULE_FILE="/tmp/schedule")
