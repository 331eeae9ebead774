"""File contents of generated repositories: README, code and Backstage descriptors."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass

CATALOG_FILE = "catalog-info.yaml"
NESTED_CATALOG_PATH = "services/api/catalog-info.yaml"

LIFECYCLES = ("production", "production", "experimental", "deprecated")
COMPONENT_TYPES = ("service", "service", "website", "library")

# Each is rejected by a YAML parser, in a different way.
_MALFORMED_TEMPLATES = (
    "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n"
    '  description: "unterminated\nspec:\n  type: service\n  owner: {owner}\n',
    "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n"
    "spec:\n  type: service\n  owner: [{owner}\n  lifecycle: production\n",
    "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n"
    "   tags: [python]\n  annotations: {{broken\nspec:\n  owner: {owner}\n",
)


@dataclass(frozen=True)
class RepositoryTheme:
    """What a repository is about; drives every generated file."""

    slug: str
    name: str
    description: str
    language: str
    owner_group: str
    system: str
    workspace: str


def readme(theme: RepositoryTheme) -> bytes:
    """A README.md that mentions the repository and its owners."""
    text = (
        f"# {theme.name}\n\n{theme.description}\n\n"
        f"This repository is part of the {theme.workspace} workspace and is owned by "
        f"{theme.owner_group}.\n\n## Getting started\n\n    make run\n\n"
        "## Support\n\nAsk in the team channel before opening an issue.\n"
    )
    return text.encode()


def main_module(theme: RepositoryTheme, revision: int = 0) -> bytes:
    """A small src/main.py."""
    lines = [
        f'"""Entry point of {theme.slug}."""',
        "",
        "",
        "def main() -> None:",
        f'    print("hello from {theme.slug}")',
    ]
    lines += [f"    # revision {revision}"] if revision else []
    lines += ["", "", 'if __name__ == "__main__":', "    main()", ""]
    return "\n".join(lines).encode()


def _component(theme: RepositoryTheme, rng: random.Random) -> dict[str, object]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": theme.slug,
            "description": theme.description,
            "tags": [theme.language] if theme.language else [],
            "annotations": {"bitbucket.org/project-slug": f"{theme.workspace}/{theme.slug}"},
        },
        "spec": {
            "type": rng.choice(COMPONENT_TYPES),
            "lifecycle": rng.choice(LIFECYCLES),
            "owner": f"group:{theme.owner_group}",
            "system": theme.system,
        },
    }


def _api(theme: RepositoryTheme, rng: random.Random) -> dict[str, object]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "API",
        "metadata": {"name": f"{theme.slug}-api", "description": f"API of {theme.name}"},
        "spec": {
            "type": "openapi",
            "lifecycle": rng.choice(LIFECYCLES),
            "owner": f"group:{theme.owner_group}",
            "system": theme.system,
            "definition": f"openapi: 3.0.0\ninfo:\n  title: {theme.slug}\n  version: 1.0.0\n"
            "paths: {}\n",
        },
    }


def _system(theme: RepositoryTheme) -> dict[str, object]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "System",
        "metadata": {"name": theme.system, "description": f"The {theme.system} system"},
        "spec": {"owner": f"group:{theme.owner_group}"},
    }


_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9 ._/:-]*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


def _scalar(value: object) -> str:
    text = str(value)
    plain = _PLAIN.match(text) and ": " not in text and not text.endswith((":", " "))
    if plain and text.lower() not in _RESERVED:
        return text
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def _emit(value: object, indent: str, lines: list[str], key: str) -> None:
    """Block-style YAML for the dicts, lists and strings descriptors are made of."""
    if isinstance(value, dict) and value:
        lines.append(f"{indent}{key}:")
        for child_key, child in value.items():
            _emit(child, indent + "  ", lines, child_key)
    elif isinstance(value, list) and value:
        lines.append(f"{indent}{key}:")
        lines.extend(f"{indent}  - {_scalar(item)}" for item in value)
    elif isinstance(value, dict | list):
        lines.append(f"{indent}{key}: {'{}' if isinstance(value, dict) else '[]'}")
    elif isinstance(value, str) and "\n" in value:
        lines.append(f"{indent}{key}: |")
        lines.extend(f"{indent}  {line}" for line in value.rstrip("\n").split("\n"))
    else:
        lines.append(f"{indent}{key}: {_scalar(value)}")


def _dump(documents: list[dict[str, object]]) -> bytes:
    """YAML text, written here rather than by a YAML library so that it is byte-identical on
    every machine (and fast enough for thousands of repositories)."""
    chunks = []
    for document in documents:
        lines: list[str] = ["---"] if len(documents) > 1 else []
        for key, value in document.items():
            _emit(value, "", lines, key)
        chunks.append("\n".join(lines) + "\n")
    return "".join(chunks).encode()


def descriptor(layout: str, theme: RepositoryTheme, rng: random.Random) -> bytes:
    """The catalog-info.yaml content for a layout (`single`, `multi`, `malformed`, `nested`)."""
    if layout == "malformed":
        template = rng.choice(_MALFORMED_TEMPLATES)
        return template.format(name=theme.slug, owner=theme.owner_group).encode()
    if layout == "multi":
        return _dump([_component(theme, rng), _api(theme, rng)])
    roll = rng.random()
    if layout == "single" and roll < 0.08:
        return _dump([_api(theme, rng)])
    if layout == "single" and roll < 0.14:
        return _dump([_system(theme)])
    return _dump([_component(theme, rng)])


def choose_catalog_layout(rng: random.Random) -> str:
    """~50% single document, ~5% several, ~5% malformed (all at the root), ~5% nested only."""
    roll = rng.random()
    if roll < 0.50:
        return "single"
    if roll < 0.55:
        return "multi"
    if roll < 0.60:
        return "malformed"
    if roll < 0.65:
        return "nested"
    return "none"


def catalog_path(layout: str) -> str | None:
    """Where the descriptor lives for a layout, or None."""
    if layout == "none":
        return None
    return NESTED_CATALOG_PATH if layout == "nested" else CATALOG_FILE


def initial_files(layout: str, theme: RepositoryTheme, rng: random.Random) -> dict[str, bytes]:
    """The file tree of a fresh repository."""
    files = {"README.md": readme(theme), "src/main.py": main_module(theme)}
    path = catalog_path(layout)
    if path is not None:
        files[path] = descriptor(layout, theme, rng)
    return files
