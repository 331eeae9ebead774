"""YAML from repositories under hard bounds: no anchors or aliases, limited nesting, node
count and scalar size, and only plain data out (what JSON can hold).

A few hundred bytes of aliases expand to gigabytes once anything walks the result (a deep
copy, a hash, a JSON column), so anchors and aliases are refused while the document is
composed, before anything is built from it. libyaml's C parser still does the scanning; the
composing is PyYAML's own, bounded here node by node, so the cost of a file is linear in its
size and never more than the limits below.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import Node, ScalarNode
from yaml.resolver import Resolver

try:  # libyaml's scanner and parser when PyYAML was built with it (~10x faster scanning)
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


# Far above any real descriptor (Backstage entities nest a dozen levels; a 50-entity file
# has a few thousand nodes), far below anything that costs noticeable time or memory.
MAX_DEPTH = 40
MAX_NODES = 20_000
MAX_SCALAR_CHARS = 64 * 1024
# Longer plain scalars stay strings: no int/float/timestamp conversion of huge digit runs.
MAX_TYPED_SCALAR_CHARS = 64

STR_TAG = "tag:yaml.org,2002:str"


class YAMLRefused(yaml.YAMLError):
    """Valid YAML bbsync will not read (aliases, too deep, too many nodes, too large)."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None) -> None:
        known = line is not None and column is not None
        where = f" at line {(line or 0) + 1}, column {(column or 0) + 1}" if known else ""
        super().__init__(f"{problem}{where}")


class _BoundedComposer(Composer):
    """PyYAML's composer with every node counted and checked before it is built."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes = 0
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[attr-defined]  # the parser's, mixed in
        mark = getattr(event, "start_mark", None)
        line, column = (mark.line, mark.column) if mark is not None else (None, None)
        if isinstance(event, AliasEvent):
            raise YAMLRefused("aliases (*name) are not allowed", line, column)
        if getattr(event, "anchor", None) is not None:
            raise YAMLRefused("anchors (&name) are not allowed", line, column)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YAMLRefused(f"more than {MAX_NODES} YAML nodes", line, column)
        if isinstance(event, ScalarEvent) and len(event.value) > MAX_SCALAR_CHARS:
            raise YAMLRefused(f"a value longer than {MAX_SCALAR_CHARS} characters", line, column)
        if not isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise YAMLRefused(f"nested deeper than {MAX_DEPTH} levels", line, column)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class BoundedLoader(_BoundedComposer, _Parser, SafeConstructor, Resolver):
    """The safe loader's data types, read through the bounded composer."""

    def __init__(self, stream: str) -> None:
        _Parser.__init__(self, stream)
        _BoundedComposer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)

    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode and implicit[0] and len(value) > MAX_TYPED_SCALAR_CHARS:
            return STR_TAG
        return str(super().resolve(kind, value, implicit))


def load_documents(text: str) -> Any:
    """The documents of `text`, one at a time, each as plain data (see `plain_data`).

    Raises `yaml.YAMLError` (with `YAMLRefused` for what the bounds refuse) or `ValueError`
    for a value the YAML types cannot hold (a 31st of February)."""
    loader = BoundedLoader(text)
    try:
        while loader.check_data():
            yield loader.get_data()
    finally:
        loader.dispose()


def plain_data(value: Any, where: str) -> Any:
    """`value` as JSON can hold it and PostgreSQL can store it, or `ValueError` naming
    where it is not: dates become ISO strings; binary, sets, non-finite numbers, keys that
    are not strings and text with NUL or lone surrogates are refused."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # fails on a lone surrogate
        except UnicodeEncodeError:
            raise ValueError(f"{where}: text with a lone surrogate") from None
        if "\x00" in value:
            raise ValueError(f"{where}: text with a NUL character")
        return value
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: a number that is not finite")
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [plain_data(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: a mapping key that is not a string")
            plain[plain_data(key, where)] = plain_data(item, f"{where}.{key[:40]}")
        return plain
    raise ValueError(f"{where}: a {type(value).__name__} value (not plain data)")
