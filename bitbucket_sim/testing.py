"""`SimProcess`: the simulator as a real subprocess, for tests.

    with SimProcess(repos=30, seed=7, rate_limit="5/m", webhook_url=url) as sim:
        requests.get(f"{sim.api_url}/repositories/{sim.workspace}")
        sim.admin("POST", "repos/svc-0001/push", json={"files": {"README.md": "hi"}})
        sim.wait_for_deliveries(1)
        assert sim.stats()["calls"]["repositories"] == 1

Keyword options are `SimConfig` field names and become flags: `rate_limit="5/m"` →
`--rate-limit 5/m`, `code_search=False` → `--no-code-search`, `search_repeats_items=True` →
`--search-repeats-items`, `None` → flag left out. The port is always picked by the process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

import requests

from bitbucket_sim.config import SimConfig

READY_PREFIX = "bitbucket_sim listening on "
_OPTION_NAMES = {field.name for field in fields(SimConfig)} - {"port", "host"}
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def options_to_flags(options: Mapping[str, object]) -> list[str]:
    """CLI flags for `SimConfig`-named options; unknown names raise `TypeError`."""
    flags: list[str] = []
    for name, value in options.items():
        if name not in _OPTION_NAMES:
            raise TypeError(f"SimProcess got an unknown option {name!r}")
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + name.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


class _Stalled(Exception):
    """A simulator process neither exited nor answered in time."""


class SimProcess:
    """Runs `python -m bitbucket_sim` on a free port for the duration of a `with` block.

    `flavor="datacenter"` runs the Data Center flavour: its REST base is `rest_url`.

    Public API (stable): `url`, `api_url`, `rest_url`, `token_url`, `port`, `workspace`, `start()`,
    `stop()`, `stats()`, `reset_stats()`, `admin()`, `deliveries()`, `wait_for_deliveries()`,
    `set_config()`, `repositories()`.
    """

    def __init__(
        self,
        workspace: str = "acme",
        repos: int = 20,
        seed: int = 1,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.workspace = workspace
        self.flavor = str(options.get("flavor") or "cloud")
        self.host = host
        self.startup_timeout = startup_timeout
        flags = options_to_flags({"workspace": workspace, "repos": repos, "seed": seed, **options})
        command = [sys.executable, "-m", "bitbucket_sim", "--host", host, "--port", "0"]
        self.args = [*command, *flags, *extra_args]
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._last_error = ""
        self._files = ExitStack()
        self.session = requests.Session()
        self.session.trust_env = False  # never send simulator traffic through a proxy

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SimProcess:
        """Launch and wait until `/_sim/stats` answers; `RuntimeError` (with its output) if not.

        A process that neither exits nor answers within `startup_timeout` is killed and started
        once more: on a loaded machine a start can stall, and one stalled start should not fail
        a whole test module. A process that exits, or stalls twice, fails with what it printed.
        """
        try:
            return self._start_once(final=False)
        except _Stalled:
            return self._start_once(final=True)

    def _start_once(self, *, final: bool) -> SimProcess:
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if part
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The files outlive this method: the process writes to them until stop() closes them.
        self._files = ExitStack()
        self._url = None
        self._last_error = "no address printed yet"
        self._stdout = self._files.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
        self._stderr = self._files.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
        self.process = subprocess.Popen(
            self.args, stdout=self._stdout, stderr=self._stderr, env=env
        )
        started = time.monotonic()
        deadline = started + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"exited with code {self.process.returncode}")
            if self._url is None:
                self._url = self._ready_url()
            if self._url is not None and self._answers():
                return self
            time.sleep(0.05)
        reason = (
            f"did not answer within {self.startup_timeout:g} s "
            f"(address {self._url or 'never printed'}; last error: {self._last_error})"
        )
        if not final:
            print(f"bitbucket_sim {reason}; starting it once more", file=sys.stderr)
            self.stop()
            self.session = requests.Session()
            self.session.trust_env = False
            raise _Stalled(reason)
        self._fail(reason)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Terminate the process (kill after 5 s) and release its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._files.close()
        self._stdout = self._stderr = None
        self.session.close()

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read(self, stream: IO[bytes] | None) -> str:
        if stream is None:
            return ""
        stream.seek(0)
        return stream.read().decode("utf-8", errors="replace")

    def _ready_url(self) -> str | None:
        for line in self._read(self._stdout).splitlines():
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].split()[0]
        return None

    def _answers(self) -> bool:
        try:
            status = self.session.get(f"{self._url}/_sim/stats", timeout=1).status_code
        except requests.RequestException as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            return False
        self._last_error = f"/_sim/stats answered {status}"
        return status == 200

    def _fail(self, reason: str) -> None:
        stdout, stderr = self._read(self._stdout), self._read(self._stderr)
        self.stop()
        raise RuntimeError(
            f"bitbucket_sim {reason}\ncommand: {' '.join(self.args)}"
            f"\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The origin, e.g. `http://127.0.0.1:54321`."""
        if self._url is None:
            raise RuntimeError("SimProcess is not started")
        return self._url

    @property
    def api_url(self) -> str:
        """Cloud: `url + "/2.0"`; Data Center: `rest_url`."""
        if self.flavor == "datacenter":
            return self.rest_url
        return self.url + "/2.0"

    @property
    def rest_url(self) -> str:
        """Data Center: `url + "/rest/api/latest"` (the server root is `url`)."""
        return self.url + "/rest/api/latest"

    @property
    def token_url(self) -> str:
        """The OAuth token endpoint, `url + "/site/oauth2/access_token"`."""
        return self.url + "/site/oauth2/access_token"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    # -- admin API -------------------------------------------------------------------------

    def admin(self, method: str, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        """Call the admin API; `path` is relative to `/_sim/` (e.g. `"repos/svc-0001/push"`)."""
        url = f"{self.url}/_sim/{path.lstrip('/')}"
        return self.session.request(method, url, json=json, timeout=30, **kwargs)

    def stats(self) -> dict[str, Any]:
        """`{calls_total, calls: {family: n}, rate_limited}`."""
        response = self.admin("GET", "stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset_stats(self) -> dict[str, Any]:
        """Zero the stats and every rate-limit window."""
        response = self.admin("POST", "stats/reset")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def deliveries(self, payload: bool = False) -> list[dict[str, Any]]:
        """Every webhook delivery attempt so far (with JSON bodies when `payload`)."""
        response = self.admin("GET", "deliveries", params={"payload": "1" if payload else "0"})
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def wait_for_deliveries(
        self,
        count: int,
        timeout: float = 60.0,
        event_key: str | None = None,
        payload: bool = False,
    ) -> list[dict[str, Any]]:
        """Poll until at least `count` attempts (of `event_key`, if given) were recorded."""
        deadline = time.monotonic() + timeout
        while True:
            attempts = [
                attempt
                for attempt in self.deliveries(payload)
                if event_key is None or attempt["event_key"] == event_key
            ]
            if len(attempts) >= count or time.monotonic() > deadline:
                return attempts
            time.sleep(0.05)

    def set_config(self, **flags: Any) -> dict[str, Any]:
        """Change behaviour flags at runtime (`POST /_sim/config`)."""
        response = self.admin("POST", "config", json=flags)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def repositories(self) -> list[dict[str, Any]]:
        """Summaries of every repository (slug, head, catalog paths, ...) from `/_sim/repos`."""
        response = self.admin("GET", "repos")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result
