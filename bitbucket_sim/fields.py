"""Partial responses (`fields=`), as Bitbucket applies them.

Supported forms, comma-separated and combinable:

- `-path` removes a field, e.g. `-values.links`, `-values.owner.links`;
- `+path` adds a field hidden by default, e.g. `+values.file.commit.repository`;
- a bare `path` switches to explicit mode: only the listed paths are returned, e.g.
  `values.uuid,values.slug,next` (a path naming an object keeps it whole);
- `*` in a path matches every key at that level, e.g. `values.*`.

Paths walk through lists transparently (`values.slug` applies to each item).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Tree = dict[str, "Tree"]


@dataclass(frozen=True)
class FieldSpec:
    """A parsed `fields=` parameter."""

    explicit: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FieldSpec:
        if not text:
            return cls()
        explicit: list[str] = []
        added: list[str] = []
        removed: list[str] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            # A `+` sent unencoded in a query string arrives as a space.
            if entry.startswith("+") or raw.startswith(" "):
                added.append(entry.lstrip("+").strip())
            elif entry.startswith("-"):
                removed.append(entry[1:].strip())
            else:
                explicit.append(entry)
        return cls(tuple(explicit), tuple(added), tuple(removed))

    def reveals(self, hidden_path: str) -> bool:
        """Whether a field hidden by default was asked for."""
        for entry in (*self.explicit, *self.added):
            if entry == hidden_path or entry.startswith(hidden_path + "."):
                return True
        return False


def _tree(paths: Iterable[str]) -> Tree:
    root: Tree = {}
    for path in paths:
        node = root
        for part in path.split("."):
            node = node.setdefault(part, {})
    return root


def _pick(node: Any, tree: Tree) -> Any:
    if not tree:
        return node
    if isinstance(node, list):
        return [_pick(item, tree) for item in node]
    if not isinstance(node, dict):
        return node
    picked: dict[str, Any] = {}
    wildcard = tree.get("*")
    if wildcard is not None:
        for key, value in node.items():
            picked[key] = _pick(value, wildcard)
    for key, subtree in tree.items():
        if key != "*" and key in node:
            picked[key] = _pick(node[key], subtree)
    return picked


def _drop(node: Any, parts: list[str]) -> Any:
    if isinstance(node, list):
        return [_drop(item, parts) for item in node]
    if not isinstance(node, dict) or not parts:
        return node
    head, rest = parts[0], parts[1:]
    keys = list(node) if head == "*" else [head]
    copy = dict(node)
    for key in keys:
        if key not in copy:
            continue
        if rest:
            copy[key] = _drop(copy[key], rest)
        else:
            del copy[key]
    return copy


def apply_fields(doc: dict[str, Any], spec: FieldSpec, hidden: Iterable[str] = ()) -> Any:
    """`doc` trimmed by `spec`; `hidden` paths are dropped unless the spec asks for them.

    Never mutates `doc`.
    """
    result: Any = doc
    for path in hidden:
        if not spec.reveals(path):
            result = _drop(result, path.split("."))
    if spec.explicit:
        result = _pick(result, _tree((*spec.explicit, *spec.added)))
    for path in spec.removed:
        result = _drop(result, path.split("."))
    return result
