"""What a descriptor may declare. Anyone who can push to any repository writes descriptors,
so they describe software only: never who a person is, never what bbsync derives.

- Kinds: only those in `BBSYNC_DESCRIPTOR_KINDS` (software kinds by default). `User` and
  `Group` are never allowed: people and groups come only from Bitbucket's member list and
  groups (`app/sync/people.py`), and identity for actions is read from them.
- Annotations bbsync owns (`bitbucket.org/*`, `bitbucket.com/*`, `bbsync.io/*`) and those
  Backstage sets for the location an entity came from (`backstage.io/managed-by-location`,
  `backstage.io/managed-by-origin-location`) are dropped from a descriptor; bbsync's derived
  values stand. A descriptor restating exactly what bbsync derives (many carry their own
  `bitbucket.org/project-slug`) keeps it, silently. Other annotations are the descriptor's to
  set (`backstage.io/source-location` of a monorepo folder, for one).

A refused document or a dropped annotation is a problem reported on the file, like a parse
error; the file's other documents are still used.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from app.catalog.descriptors import Descriptor

# Backstage's software-catalog kinds a descriptor may declare when an operator allows them.
SOFTWARE_KINDS = ("Component", "API", "System", "Domain", "Resource", "Location", "Template")
DEFAULT_DESCRIPTOR_KINDS = ("Component", "API", "System", "Domain", "Resource")
# Kinds that would say who a person is or which people form a group: never from a repository.
PEOPLE_KINDS = ("User", "Group")

RESERVED_ANNOTATION_PREFIXES = ("bitbucket.org/", "bitbucket.com/", "bbsync.io/")
RESERVED_ANNOTATIONS = frozenset(
    {"backstage.io/managed-by-location", "backstage.io/managed-by-origin-location"}
)
# An operator reads the report; a hostile file must not make it unbounded.
MAX_REPORTED_PROBLEMS = 10
MAX_REPORTED_KEYS = 5
MAX_KEY_CHARS = 100
MAX_REPORT_CHARS = 2000


def is_reserved_annotation(key: str) -> bool:
    """True for an annotation only bbsync (or Backstage's location processing) may set."""
    lowered = key.lower()
    return lowered in RESERVED_ANNOTATIONS or lowered.startswith(RESERVED_ANNOTATION_PREFIXES)


def without_reserved_annotations(
    annotations: Mapping[str, str], derived: Mapping[str, str]
) -> dict[str, str]:
    """`annotations` less the reserved ones, unless equal to what bbsync derives (`derived`)."""
    return {
        k: v for k, v in annotations.items() if not is_reserved_annotation(k) or derived.get(k) == v
    }


@dataclass
class Screened:
    """The documents a file may define, and what was refused or dropped from it."""

    descriptors: list[Descriptor] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def report(self) -> str | None:
        """The problems as one line for `catalog_files.parse_error`, bounded; None if none."""
        if not self.problems:
            return None
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        more = len(self.problems) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more else "")
        return text if len(text) <= MAX_REPORT_CHARS else text[: MAX_REPORT_CHARS - 1] + "…"


def screen_descriptors(
    descriptors: Iterable[Descriptor], kinds: Iterable[str], derived: Mapping[str, str]
) -> Screened:
    """Keep the documents of allowed kinds, less the annotations bbsync owns that differ
    from what it derives (`derived`: the values bbsync sets for this file's entities)."""
    allowed = {kind.lower() for kind in kinds} - {kind.lower() for kind in PEOPLE_KINDS}
    screened = Screened()
    for descriptor in descriptors:
        if descriptor.kind.lower() not in allowed:
            why = (
                "people and groups come only from Bitbucket"
                if descriptor.kind.lower() in {k.lower() for k in PEOPLE_KINDS}
                else "not in BBSYNC_DESCRIPTOR_KINDS"
            )
            screened.problems.append(
                f"{descriptor.ref}: kind {descriptor.kind} is not allowed in a descriptor ({why})"
            )
            continue
        metadata = descriptor.body.get("metadata") or {}
        annotations: dict[str, str] = metadata.get("annotations") or {}
        kept = without_reserved_annotations(annotations, derived)
        dropped = [key for key in annotations if key not in kept]
        if dropped:
            body = copy.deepcopy(descriptor.body)
            body["metadata"]["annotations"] = kept
            descriptor = Descriptor(descriptor.kind, descriptor.namespace, descriptor.name, body)
            keys = ", ".join(key[:MAX_KEY_CHARS] for key in dropped[:MAX_REPORTED_KEYS])
            more = len(dropped) - MAX_REPORTED_KEYS
            screened.problems.append(
                f"{descriptor.ref}: annotations only bbsync sets were ignored: {keys}"
                + (f" and {more} more" if more > 0 else "")
            )
        screened.descriptors.append(descriptor)
    return screened
