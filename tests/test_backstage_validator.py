"""The Backstage validation harness itself: real `@backstage/catalog-model` run by `node`
accepts what Backstage accepts and rejects what it rejects; the installer locks and reports."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.backstage_validator import (
    BackstageValidator,
    BackstageValidatorError,
    install_catalog_model,
    validate_entities,
)


@pytest.fixture(scope="session")
def backstage() -> BackstageValidator:
    return BackstageValidator.installed()


def component(**overrides: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "billing"},
        "spec": {"type": "service", "lifecycle": "production", "owner": "group:default/payments"},
    }
    entity.update(overrides)
    return entity


def test_valid_component_passes(backstage: BackstageValidator) -> None:
    assert backstage.validate([component()]) == []


def test_module_level_function_validates_too() -> None:
    assert validate_entities([component()]) == []
    problems = validate_entities([component(metadata={"name": "bad name!"})])
    assert len(problems) == 1


def test_component_without_owner_fails(backstage: BackstageValidator) -> None:
    entity = component()
    del entity["spec"]["owner"]
    problems = backstage.validate([entity])
    assert len(problems) == 1
    assert problems[0].startswith("component:default/billing: ")
    assert "owner" in problems[0]


def test_name_with_invalid_characters_fails(backstage: BackstageValidator) -> None:
    problems = backstage.validate([component(metadata={"name": "bad name!"})])
    assert len(problems) == 1
    assert problems[0].startswith("component:default/bad name!: ")
    assert "metadata.name" in problems[0]


def test_group_with_type_and_empty_children_passes(backstage: BackstageValidator) -> None:
    group = {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Group",
        "metadata": {"name": "payments", "namespace": "default"},
        "spec": {"type": "team", "children": []},
    }
    assert backstage.validate([group]) == []


def test_non_string_annotation_value_fails(backstage: BackstageValidator) -> None:
    entity = component(metadata={"name": "billing", "annotations": {"example.com/port": 8080}})
    problems = backstage.validate([entity])
    assert len(problems) == 1
    assert problems[0].startswith("component:default/billing: ")
    assert "annotations" in problems[0]


def test_only_the_bad_entities_of_a_batch_are_reported(backstage: BackstageValidator) -> None:
    good = component()
    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "orders"
    bad["spec"]["lifecycle"] = 3
    foreign_root = component(status={"x": 1})
    problems = backstage.validate([good, bad, foreign_root])
    assert [p.split(": ", 1)[0] for p in problems] == [
        "component:default/orders",
        "component:default/billing",
    ]


def test_unknown_backstage_kind_fails_but_foreign_api_version_gets_only_policies(
    backstage: BackstageValidator,
) -> None:
    widget = {"apiVersion": "backstage.io/v1alpha1", "kind": "Widget", "metadata": {"name": "w"}}
    foreign = {**widget, "apiVersion": "example.com/v1"}
    problems = backstage.validate([widget, foreign])
    assert len(problems) == 1
    assert problems[0].startswith("widget:default/w: unknown kind")


def test_empty_list_has_no_problems(backstage: BackstageValidator) -> None:
    assert backstage.validate([]) == []


def fake_npm(bin_dir: Path, body: str) -> None:
    """Put an executable `npm` (a Python script) first on a PATH made of `bin_dir`."""
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    npm.chmod(0o755)


def test_failed_install_reports_npm_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_npm(
        tmp_path / "bin",
        """
        import sys
        sys.stderr.write("npm ERR! code E404\\nnpm ERR! 404 Not Found - the registry said no\\n")
        sys.exit(1)
        """,
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("BBSYNC_NPM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(BackstageValidatorError) as failure:
        install_catalog_model()
    message = str(failure.value)
    assert "npm install --no-audit --no-fund @backstage/catalog-model@" in message
    assert "exit 1" in message
    assert "404 Not Found - the registry said no" in message
    assert (tmp_path / "cache" / "package.json").is_file()


def test_concurrent_installs_run_npm_once(tmp_path: Path) -> None:
    fake_npm(
        tmp_path / "bin",
        f"""
        import pathlib, time
        with open({str(tmp_path / "calls")!r}, "a") as calls:
            calls.write("install\\n")
        time.sleep(1)
        package = pathlib.Path("node_modules/@backstage/catalog-model")
        package.mkdir(parents=True)
        (package / "package.json").write_text("{{}}")
        """,
    )
    cache = tmp_path / "cache"
    script = (
        "from pathlib import Path; from tests.backstage_validator import install_catalog_model; "
        f"print(install_catalog_model(Path({str(cache)!r})))"
    )
    env = {"PATH": str(tmp_path / "bin"), "PYTHONPATH": str(Path(__file__).parent.parent)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0]
    assert outputs == [str(cache.resolve())] * 3
    assert (tmp_path / "calls").read_text() == "install\n"
