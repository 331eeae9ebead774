"""Code search over the head of each repository's main branch.

Query language (a practical subset of Bitbucket's): whitespace-separated terms, `"quoted
phrases"`, and the filters `repo:<slug>`, `project:<key>`, `path:<path, directory, file name
or glob>`, `ext:<extension>` and `lang:<language>`. A term matches a file when it occurs,
case-insensitively, in its content or its path; every term must match.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from bitbucket_sim.model import Commit, Repository

MAX_REACHABLE_RESULTS = 1000
MAX_CONTENT_MATCHES = 3


class SearchQueryError(ValueError):
    """The search query is empty or malformed; answered with HTTP 400."""


@dataclass(frozen=True)
class SearchQuery:
    terms: tuple[str, ...]
    repos: tuple[str, ...]
    projects: tuple[str, ...]
    paths: tuple[str, ...]
    extensions: tuple[str, ...]
    languages: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> SearchQuery:
        try:
            tokens = shlex.split(text)
        except ValueError as exc:
            raise SearchQueryError(f"Invalid search query: {exc}") from exc
        terms: list[str] = []
        filters: dict[str, list[str]] = {
            "repo": [],
            "project": [],
            "path": [],
            "ext": [],
            "lang": [],
        }
        for token in tokens:
            name, sep, value = token.partition(":")
            if sep and name.lower() in filters and value:
                filters[name.lower()].append(value)
            elif token.upper() not in ("AND",):
                terms.append(token.lower())
        if not terms and not any(filters.values()):
            raise SearchQueryError("Search query is empty")
        return cls(
            terms=tuple(terms),
            repos=tuple(v.lower() for v in filters["repo"]),
            projects=tuple(v.upper() for v in filters["project"]),
            paths=tuple(filters["path"]),
            extensions=tuple(v.lower().lstrip(".") for v in filters["ext"]),
            languages=tuple(v.lower() for v in filters["lang"]),
        )


@dataclass(frozen=True)
class SearchHit:
    repo: Repository
    commit: Commit
    path: str
    content: str


def path_matches_filter(path: str, wanted: str) -> bool:
    """`path:` semantics: the whole path, a file name, a directory prefix or a glob."""
    wanted = wanted.strip("/")
    name = path.rsplit("/", 1)[-1]
    return (
        path == wanted
        or name == wanted
        or path.startswith(wanted + "/")
        or path.endswith("/" + wanted)
        or fnmatch.fnmatch(path, wanted)
        or fnmatch.fnmatch(name, wanted)
    )


def _accepts(query: SearchQuery, repo: Repository, path: str, content: str) -> bool:
    if query.repos and repo.slug not in query.repos:
        return False
    if query.projects and repo.project_key.upper() not in query.projects:
        return False
    if query.languages and repo.language not in query.languages:
        return False
    if query.paths and not any(path_matches_filter(path, wanted) for wanted in query.paths):
        return False
    if query.extensions and path.rsplit(".", 1)[-1].lower() not in query.extensions:
        return False
    lowered_content, lowered_path = content.lower(), path.lower()
    return all(term in lowered_content or term in lowered_path for term in query.terms)


def find(query: SearchQuery, repositories: list[Repository]) -> Iterator[SearchHit]:
    """Every matching file, in repository order then path order."""
    for repo in repositories:
        head = repo.head
        for path in sorted(head.files):
            content = head.files[path].decode("utf-8", errors="replace")
            if _accepts(query, repo, path, content):
                yield SearchHit(repo, head, path, content)


def _segments(text: str, terms: tuple[str, ...]) -> list[dict[str, object]]:
    if not terms:
        return [{"text": text}]
    pattern = re.compile("|".join(re.escape(term) for term in terms), re.IGNORECASE)
    segments: list[dict[str, object]] = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() > position:
            segments.append({"text": text[position : match.start()]})
        segments.append({"text": match.group(0), "match": True})
        position = match.end()
    if position < len(text):
        segments.append({"text": text[position:]})
    return segments


def content_matches(hit: SearchHit, terms: tuple[str, ...]) -> tuple[int, list[dict[str, object]]]:
    """`(content_match_count, content_matches)` for a hit."""
    if not terms:
        return 0, []
    count = 0
    matches: list[dict[str, object]] = []
    for number, line in enumerate(hit.content.splitlines(), start=1):
        lowered = line.lower()
        found = sum(lowered.count(term) for term in terms)
        if not found:
            continue
        count += found
        if len(matches) < MAX_CONTENT_MATCHES:
            matches.append({"lines": [{"line": number, "segments": _segments(line, terms)}]})
    return count, matches


def path_segments(hit: SearchHit, terms: tuple[str, ...]) -> list[dict[str, object]]:
    """`path_matches`: the path split into segments, matched ones flagged; empty if none."""
    segments = _segments(hit.path, terms)
    return segments if any(segment.get("match") for segment in segments) else []
