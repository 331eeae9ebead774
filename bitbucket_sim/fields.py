"""Partial responses (`fields=`), as Bitbucket applies them.

Supported forms, comma-separated and combinable:

- `-path` removes a field, e.g. `-values.links`, `-values.owner.links`;
- `+path` adds a field hidden by default, e.g. `+values.file.commit.repository`;
- a bare `path` switches to explicit mode: only the listed paths are returned, e.g.
  `values.uuid,values.slug,next` (a path naming an object keeps it whole);
- `*` in a path matches every key at that level, e.g. `values.*`.

An exclusion never removes what the same request added below it: `-values.*.*.*.links` with
`+values.file.commit.repository.links.html.href` keeps that one link (Backstage's Bitbucket
Cloud provider asks exactly this). Whether a literal exclusion yields too is unverified:
`survive="always"` makes it yield, the default "wildcard" only exclusions with `*`.

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


def _drop(node: Any, parts: list[str], keep: list[list[str]], walked: tuple[str, ...]) -> Any:
    """`node` without the path `parts`, except where a `keep` path lies at or under it."""
    if isinstance(node, list):
        return [_drop(item, parts, keep, walked) for item in node]
    if not isinstance(node, dict) or not parts:
        return node
    head, rest = parts[0], parts[1:]
    keys = list(node) if head == "*" else [head]
    copy = dict(node)
    for key in keys:
        if key not in copy:
            continue
        if rest:
            copy[key] = _drop(copy[key], rest, keep, (*walked, key))
            continue
        here = [*walked, key]
        below = [k[len(here) :] for k in keep if k[: len(here)] == here]
        if not below:
            del copy[key]
        elif any(not suffix for suffix in below):
            continue  # the field itself was added: it stays whole
        else:
            copy[key] = _pick(copy[key], _tree(".".join(suffix) for suffix in below))
    return copy


def apply_fields(
    doc: dict[str, Any], spec: FieldSpec, hidden: Iterable[str] = (), survive: str = "wildcard"
) -> Any:
    """`doc` trimmed by `spec`; `hidden` paths are dropped unless the spec asks for them.
    `survive`: which exclusions spare added fields below them ("wildcard" or "always").

    Never mutates `doc`.
    """
    result: Any = doc
    for path in hidden:
        if not spec.reveals(path):
            result = _drop(result, path.split("."), [], ())
    if spec.explicit:
        result = _pick(result, _tree((*spec.explicit, *spec.added)))
    asked = [path.split(".") for path in (*spec.explicit, *spec.added)]
    for path in spec.removed:
        spared = asked if survive == "always" or "*" in path.split(".") else []
        result = _drop(result, path.split("."), spared, ())
    return result
