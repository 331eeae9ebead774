"""The command lines of bbsync's own processes as the tests and benchmarks start them, taken
from the Procfile once, here: `worker` and `beat` (Celery, `workers.main`) and `web`
(gunicorn), all from this interpreter's environment. Callers start them their own way
(`subprocess.Popen`, `bench.system.Processes`) with `cwd` at the repository root.

Not a benchmark itself; nothing here prints figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

BIN = Path(sys.executable).parent
# The Procfile worker's queues: every queue bbsync's tasks are routed to.
QUEUES = "events,sync,default"
CELERY = [sys.executable, "-m", "celery", "-A", "workers.main"]


def celery_worker(
    concurrency: int = 2,
    *,
    loglevel: str = "INFO",
    hostname: str | None = None,
    beat_schedule: Path | str | None = None,
) -> list[str]:
    """The Procfile's `worker` (`--concurrency` being its WORKER_CONCURRENCY); `hostname`
    names the node when several run at once (`name@%h`); `beat_schedule` embeds beat in the
    worker (`--beat`) with its schedule file there."""
    args = [*CELERY, "worker", "--loglevel", loglevel, "--queues", QUEUES]
    args += ["--concurrency", str(concurrency), "--without-gossip", "--without-mingle"]
    if hostname is not None:
        args += ["--hostname", hostname]
    if beat_schedule is not None:
        args += ["--beat", "--schedule", str(beat_schedule)]
    return args


def celery_beat(schedule: Path | str, *, loglevel: str = "INFO") -> list[str]:
    """The Procfile's `beat`, its schedule file at `schedule` (BEAT_SCHEDULE_FILE)."""
    return [*CELERY, "beat", "--loglevel", loglevel, "--schedule", str(schedule)]


def gunicorn(
    port: int,
    workers: int = 2,
    app: str = "app.web.wsgi:app",
    *,
    timeout: int = 30,
    threads: int = 1,
) -> list[str]:
    """The Procfile's `web` on 127.0.0.1:`port`: sync workers, no access log (it would cost
    CPU); with `threads` above 1, gunicorn's threaded workers (`gthread`) with that many each."""
    return [
        str(BIN / "gunicorn"),
        *("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", str(timeout)),
        *(["--threads", str(threads)] if threads > 1 else []),
        app,
    ]
