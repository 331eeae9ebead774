"""Finding catalog files without opening every repository.

Code search answers "which repositories have a file named like this" in one call per 100
results, but a query reaches at most 1,000 results. When a query reports more, it is split
into queries over groups of repositories (`repo:` filters, OR-ed) small enough to stay under
the cap, so no file is silently dropped. When code search is not available to the credential
(disabled, no scope), the caller falls back to probing each repository.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.bitbucket.client import BitbucketClient, api_path
from app.bitbucket.errors import BitbucketRequestError

log = logging.getLogger(__name__)

SEARCH_CAP = 1000
SEARCH_PAGELEN = 100
GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(c in GLOB_CHARS for c in pattern)


def path_matches(path: str, patterns: Iterable[str]) -> bool:
    """Whether a repository path is one of the configured catalog paths or globs."""
    path = path.strip("/")
    for pattern in patterns:
        if path == pattern:
            return True
        if is_glob(pattern) and (
            fnmatch.fnmatchcase(path, pattern)
            or (pattern.startswith("**/") and fnmatch.fnmatchcase(path, pattern[3:]))
        ):
            return True
    return False


def search_term(pattern: str) -> str:
    """The code-search filter that finds candidates for a pattern (then filtered exactly)."""
    name = pattern.rsplit("/", 1)[-1]
    if not is_glob(name):
        return f"path:{name}"
    extension = name.rsplit(".", 1)[-1] if "." in name else ""
    if extension and not is_glob(extension):
        return f"ext:{extension}"
    raise ValueError(f"catalog pattern {pattern!r}: its file name needs a fixed extension")


@dataclass
class SearchResult:
    """Catalog files found by code search: `{repository slug: {path}}`, and what it cost."""

    files: dict[str, set[str]] = field(default_factory=dict)
    queries: int = 0
    pages: int = 0


class CodeSearchUnavailable(Exception):
    """Code search is disabled for the workspace or the credential lacks the scope."""


class CatalogFileSearch:
    def __init__(self, client: BitbucketClient, patterns: tuple[str, ...], group_size: int = 40):
        self.client = client
        self.patterns = patterns
        self.group_size = group_size

    def find(self, workspace: str, slugs: list[str]) -> SearchResult:
        """Every catalog file in the given repositories (all of the workspace's when the
        list is everything). Raises `CodeSearchUnavailable` to make the caller probe."""
        result = SearchResult()
        wanted = set(slugs)
        for term in sorted({search_term(p) for p in self.patterns}):
            self._search(workspace, term, None, wanted, result)
        return result

    def _search(
        self,
        workspace: str,
        term: str,
        group: list[str] | None,
        wanted: set[str],
        result: SearchResult,
    ) -> None:
        query = term if group is None else f"{term} " + " ".join(f"repo:{s}" for s in group)
        params = {"search_query": query, "fields": "+values.file.commit.repository"}
        pages = self.client.iter_pages(
            api_path("workspaces", workspace, "search", "code"), params, pagelen=SEARCH_PAGELEN
        )
        result.queries += 1
        try:
            first = next(pages, None)
        except BitbucketRequestError as exc:
            if exc.status in (400, 403, 404):
                raise CodeSearchUnavailable(str(exc)) from exc
            raise
        if first is None:
            return
        result.pages += 1
        if (first.size or 0) > SEARCH_CAP:
            members = group if group is not None else sorted(wanted)
            if len(members) > 1:
                # Too many results for one query: split and ask again, smaller.
                size = min(self.group_size, max(1, len(members) // 2))
                if group is not None:
                    size = max(1, len(members) // 2)
                for start in range(0, len(members), size):
                    self._search(workspace, term, members[start : start + size], wanted, result)
                return
            log.warning(
                "one repository has more matching files than code search returns",
                extra={"repository": members[0], "size": first.size},
            )
        self._collect(first.values, wanted, result)
        for page in pages:
            result.pages += 1
            self._collect(page.values, wanted, result)

    def _collect(self, values: list[dict], wanted: set[str], result: SearchResult) -> None:
        for value in values:
            file = value.get("file") or {}
            path = str(file.get("path") or "")
            repository = (file.get("commit") or {}).get("repository") or {}
            full_name = str(repository.get("full_name") or "")
            slug = full_name.split("/", 1)[-1] if full_name else ""
            if slug in wanted and path_matches(path, self.patterns):
                # A set: Bitbucket's pages may repeat an item.
                result.files.setdefault(slug, set()).add(path)
