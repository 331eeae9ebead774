"""Validate Backstage entities with Backstage's own `@backstage/catalog-model` package.

The npm package is installed once into a cache directory outside the repository
(`$BBSYNC_NPM_CACHE`, else `~/.cache/bbsync/catalog-model`) and run by the machine's `node`
through `tests/backstage_validate.cjs`, which applies the catalog backend's entity policies and
kind validators. Typical use::

    assert validate_entities([entity.body for entity in built]) == []

or, as a session fixture::

    @pytest.fixture(scope="session")
    def backstage() -> BackstageValidator:
        return BackstageValidator.installed()
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PACKAGE = "@backstage/catalog-model"
PACKAGE_VERSION = "^1.10.3"
CACHE_ENV = "BBSYNC_NPM_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/bbsync/catalog-model")
SCRIPT = Path(__file__).resolve().with_name("backstage_validate.cjs")

NPM_TIMEOUT_SECONDS = 600
NODE_TIMEOUT_SECONDS = 120
_STDERR_TAIL_CHARS = 3000


class BackstageValidatorError(RuntimeError):
    """The validator could not run: npm/node missing, install failed, or the script crashed."""


def cache_dir() -> Path:
    """Return the directory the npm package is installed into (not created here)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else DEFAULT_CACHE_DIR.expanduser()


def _tail(text: str) -> str:
    text = text.strip()
    if len(text) <= _STDERR_TAIL_CHARS:
        return text
    return "..." + text[-_STDERR_TAIL_CHARS:]


def _package_dir(directory: Path) -> Path:
    return directory.joinpath("node_modules", *PACKAGE.split("/"))


def _is_installed(directory: Path) -> bool:
    return (_package_dir(directory) / "package.json").is_file()


def install_catalog_model(directory: Path | None = None) -> Path:
    """Install `@backstage/catalog-model` into `directory` (default `cache_dir()`) unless present.

    Holds an exclusive `fcntl` lock on `<directory>/.install.lock` while checking and
    installing, so concurrent test processes install at most once. Returns the directory
    (the one containing `node_modules`). Raises `BackstageValidatorError` with the tail of
    npm's output when npm is missing or the install fails.
    """
    directory = (directory or cache_dir()).expanduser().resolve()
    if _is_installed(directory):
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _is_installed(directory):
                _npm_install(directory)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return directory


def _npm_install(directory: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise BackstageValidatorError(
            f"npm is not on PATH; it is needed to install {PACKAGE} into {directory}"
        )
    manifest = directory / "package.json"
    if not manifest.exists():
        manifest.write_text(
            json.dumps(
                {
                    "name": "bbsync-catalog-model",
                    "private": True,
                    "description": "Cache for bbsync's Backstage entity validation tests",
                },
                indent=2,
            )
            + "\n"
        )
    command = [npm, "install", "--no-audit", "--no-fund", f"{PACKAGE}@{PACKAGE_VERSION}"]
    env = {**os.environ, "npm_config_update_notifier": "false"}
    try:
        result = subprocess.run(
            command,
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise BackstageValidatorError(
            f"`{' '.join(command)}` in {directory} timed out after {NPM_TIMEOUT_SECONDS}s\n"
            f"npm stderr (tail):\n{_tail(stderr)}"
        ) from exc
    if result.returncode != 0 or not _is_installed(directory):
        raise BackstageValidatorError(
            f"`{' '.join(command)}` in {directory} failed (exit {result.returncode})\n"
            f"npm stderr (tail):\n{_tail(result.stderr or result.stdout)}"
        )


class BackstageValidator:
    """Runs `tests/backstage_validate.cjs` against an installed `@backstage/catalog-model`."""

    def __init__(self, directory: Path) -> None:
        """Use the package installed under `directory` (see `install_catalog_model`)."""
        self.directory = directory

    @classmethod
    def installed(cls, directory: Path | None = None) -> BackstageValidator:
        """Install the package if needed (see `install_catalog_model`) and return a validator."""
        return cls(install_catalog_model(directory))

    def check(self, entities: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        """Return the raw `{"ref", "error"}` failures reported by the Node script."""
        node = shutil.which("node")
        if node is None:
            raise BackstageValidatorError("node is not on PATH; it is needed to validate entities")
        try:
            payload = json.dumps(list(entities))
        except (TypeError, ValueError) as exc:
            raise BackstageValidatorError(f"entities are not JSON-serialisable: {exc}") from exc
        try:
            result = subprocess.run(
                [node, str(SCRIPT), str(self.directory)],
                input=payload,
                capture_output=True,
                text=True,
                timeout=NODE_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BackstageValidatorError(
                f"{SCRIPT.name} timed out after {NODE_TIMEOUT_SECONDS}s"
            ) from exc
        if result.returncode != 0:
            raise BackstageValidatorError(
                f"{SCRIPT.name} failed (exit {result.returncode}):\n{_tail(result.stderr)}"
            )
        try:
            failures = json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            raise BackstageValidatorError(
                f"{SCRIPT.name} printed something that is not JSON: {result.stdout[:500]!r}"
            ) from exc
        if not isinstance(failures, list):
            raise BackstageValidatorError(f"{SCRIPT.name} printed {failures!r}, not a list")
        return [{"ref": str(f["ref"]), "error": str(f["error"])} for f in failures]

    def validate(self, entities: Sequence[Mapping[str, Any]]) -> list[str]:
        """Return `"kind:namespace/name: message"` for each entity Backstage would reject."""
        return [f"{failure['ref']}: {failure['error']}" for failure in self.check(entities)]


_default: BackstageValidator | None = None


def validate_entities(entities: Sequence[Mapping[str, Any]]) -> list[str]:
    """Validate entities as Backstage's catalog would; return problems, empty when all valid.

    Each problem reads `"kind:namespace/name: message"` (the ref in Backstage's lower-cased
    form). Installs `@backstage/catalog-model` into `cache_dir()` on first use.
    """
    global _default
    if _default is None:
        _default = BackstageValidator.installed()
    return _default.validate(entities)
