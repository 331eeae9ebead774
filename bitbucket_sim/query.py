"""BBQL (`q=`) filtering and `sort=` ordering over rendered JSON objects.

Supported: comparisons `=`, `!=`, `~` (contains, case-insensitive), `!~`, `>`, `>=`, `<`, `<=`
on dotted field paths (`updated_on`, `project.key`, `mainbranch.name`, `state`, ...), values as
double-quoted strings, bare ISO timestamps/dates, numbers, `true`, `false`, `null`; combined with
`AND`, `OR` and parentheses. Fields ending in `_on` compare as timestamps. A bare timestamp whose
`+` was decoded into a space (`2026-01-01T00:00:00 00:00`) is read as `+00:00`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bitbucket_sim.ids import parse_iso


class QueryError(ValueError):
    """The query or sort expression is not valid; answered with HTTP 400."""


_TIMESTAMP = (
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2}|\s\d{2}:\d{2}(?=\s|\)|$))?"
)
_TOKEN = re.compile(
    r"\s*(?:"
    r'(?P<string>"(?:[^"\\]|\\.)*")'
    rf"|(?P<timestamp>{_TIMESTAMP})"
    r"|(?P<op>!=|>=|<=|!~|=|~|>|<)"
    r"|(?P<paren>[()])"
    r"|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<word>[A-Za-z_{][\w.\-{}:]*)"
    r")"
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise QueryError(f"Invalid query: unexpected input at {text[position:]!r}")
        kind = match.lastgroup or "word"
        tokens.append(Token(kind, match.group(kind)))
        position = match.end()
    return tokens


Predicate = Callable[[dict[str, Any]], bool]


def field_value(doc: Any, path: str) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _literal(token: Token) -> Any:
    if token.kind == "string":
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])
    if token.kind == "timestamp":
        text = token.text
        if re.search(r"\s\d{2}:\d{2}$", text):
            text = text[:-6] + "+" + text[-5:]
        return text
    if token.kind == "number":
        return float(token.text) if "." in token.text else int(token.text)
    lowered = token.text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    return token.text


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            return None
    return None


def _compare(actual: Any, op: str, expected: Any, timestamp: bool) -> bool:
    if timestamp:
        actual, expected = _as_time(actual), _as_time(expected)
        if expected is None:
            raise QueryError("Invalid query: expected a timestamp")
    if op == "~" or op == "!~":
        found = actual is not None and str(expected).lower() in str(actual).lower()
        return found if op == "~" else not found
    if op == "=":
        return bool(actual == expected)
    if op == "!=":
        return bool(actual != expected)
    if actual is None or expected is None:
        return False
    try:
        if op == ">":
            return bool(actual > expected)
        if op == ">=":
            return bool(actual >= expected)
        if op == "<":
            return bool(actual < expected)
        return bool(actual <= expected)
    except TypeError as exc:
        raise QueryError("Invalid query: values cannot be compared") from exc


class _Parser:
    def __init__(self, tokens: list[Token], known: Callable[[str], bool]) -> None:
        self.tokens = tokens
        self.position = 0
        self.known = known

    def peek(self) -> Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise QueryError("Invalid query: unexpected end")
        self.position += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.upper() == word:
            self.position += 1
            return True
        return False

    def expression(self) -> Predicate:
        parts = [self.conjunction()]
        while self.keyword("OR"):
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda doc: any(part(doc) for part in parts)

    def conjunction(self) -> Predicate:
        parts = [self.factor()]
        while self.keyword("AND"):
            parts.append(self.factor())
        if len(parts) == 1:
            return parts[0]
        return lambda doc: all(part(doc) for part in parts)

    def factor(self) -> Predicate:
        token = self.take()
        if token.kind == "paren" and token.text == "(":
            inner = self.expression()
            closing = self.take()
            if closing.text != ")":
                raise QueryError("Invalid query: missing )")
            return inner
        if token.kind != "word":
            raise QueryError(f"Invalid query: expected a field name, got {token.text!r}")
        path = token.text
        if not self.known(path):
            raise QueryError(f"Invalid field name: {path}")
        op = self.take()
        if op.kind != "op":
            raise QueryError(f"Invalid query: expected an operator after {path}")
        value_token = self.take()
        if value_token.kind in ("op", "paren"):
            raise QueryError(f"Invalid query: expected a value after {path} {op.text}")
        expected = _literal(value_token)
        timestamp = path.rsplit(".", 1)[-1].endswith("_on") or value_token.kind == "timestamp"
        if timestamp and _as_time(expected) is None:
            raise QueryError(f"Invalid query: {value_token.text} is not a timestamp")
        return lambda doc: _compare(field_value(doc, path), op.text, expected, timestamp)


def compile_query(text: str, sample: dict[str, Any] | None = None) -> Predicate:
    """A predicate for a BBQL string; `sample` (any item) lets unknown fields be rejected."""

    def known(path: str) -> bool:
        return sample is None or path.split(".", 1)[0] in sample

    parser = _Parser(_tokenize(text), known)
    predicate = parser.expression()
    leftover = parser.peek()
    if leftover is not None:
        raise QueryError(f"Invalid query: unexpected {leftover.text!r}")
    return predicate


def sort_documents(docs: Sequence[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    """`docs` ordered by a `sort=` field (`-` prefix for descending); None sorts first."""
    descending = spec.startswith("-")
    path = spec.lstrip("-+").strip()
    if not path:
        raise QueryError("Invalid sort field")
    if docs and path.split(".", 1)[0] not in docs[0]:
        raise QueryError(f"Invalid sort field: {path}")
    timestamp = path.rsplit(".", 1)[-1].endswith("_on")

    def key(doc: dict[str, Any]) -> tuple[int, Any]:
        value = field_value(doc, path)
        if value is None:
            return (0, "")
        if timestamp:
            moment = _as_time(value)
            return (1, moment.timestamp() if moment else 0.0)
        if isinstance(value, str):
            return (1, value.lower())
        return (1, value)

    return sorted(docs, key=key, reverse=descending)
