"""Reading `catalog-info.yaml` descriptors safely: YAML's safe types under size, document,
node, nesting and alias bounds (`bounded_yaml`), every document checked for the fields
Backstage needs before it is kept.

A file either parses completely or not at all: one bad document makes the whole file an
error, so a half-edited descriptor never removes the entities its good version defined.
What a well-formed document may declare (kinds, annotations) is `descriptor_policy`'s call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from app.catalog.bounded_yaml import YAMLRefused, load_documents, plain_data

# Backstage's rules for kind, namespace and name (catalog-model's FieldFormatEntityPolicy).
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9]([-_.a-zA-Z0-9]{0,61}[a-zA-Z0-9])?$")
NAMESPACE_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
KIND_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9]{0,62}$")


class DescriptorError(ValueError):
    """The file cannot be used; the message says where and why, for an operator."""


@dataclass(frozen=True)
class Descriptor:
    """One entity document as written in a file."""

    kind: str
    namespace: str
    name: str
    body: dict[str, Any]

    @property
    def ref(self) -> str:
        return entity_ref(self.kind, self.namespace, self.name)


def entity_ref(kind: str, namespace: str, name: str) -> str:
    """Backstage's compound reference `kind:namespace/name`, compared case-insensitively."""
    return f"{kind}:{namespace}/{name}".lower()


def parse_descriptor(content: bytes, *, max_bytes: int, max_documents: int) -> list[Descriptor]:
    """Every entity in a descriptor file, or `DescriptorError` naming the problem."""
    if len(content) > max_bytes:
        raise DescriptorError(f"file is {len(content)} bytes, more than the {max_bytes} allowed")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DescriptorError(f"not UTF-8 text (byte {exc.start})") from None
    descriptors: list[Descriptor] = []
    try:
        for index, document in enumerate(load_documents(text), start=1):
            if index > max_documents:
                raise DescriptorError(f"more than {max_documents} YAML documents")
            if document is None:
                continue  # an empty document between `---` separators
            descriptors.append(_descriptor(plain_data(document, f"document {index}"), index))
    except DescriptorError:
        raise
    except YAMLRefused as exc:
        raise DescriptorError(f"refused YAML: {exc}") from None
    except ValueError as exc:  # a value YAML's types cannot hold, e.g. 2026-02-31
        raise DescriptorError(f"unusable value: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise DescriptorError(f"invalid YAML{where}: {problem}") from None
    if not descriptors:
        raise DescriptorError("no entity in the file")
    return descriptors


def _descriptor(document: Any, index: int) -> Descriptor:
    where = f"document {index}"
    if not isinstance(document, dict):
        raise DescriptorError(f"{where}: not a mapping")
    api_version = document.get("apiVersion")
    kind = document.get("kind")
    metadata = document.get("metadata")
    if not isinstance(api_version, str) or "/" not in api_version:
        raise DescriptorError(f"{where}: apiVersion missing or not like backstage.io/v1alpha1")
    if not isinstance(kind, str) or not KIND_PATTERN.match(kind):
        raise DescriptorError(f"{where}: kind missing or malformed")
    if not isinstance(metadata, dict):
        raise DescriptorError(f"{where}: metadata missing")
    name = metadata.get("name")
    namespace = metadata.get("namespace", "default")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise DescriptorError(f"{where}: metadata.name missing or not a valid entity name")
    if not isinstance(namespace, str) or not NAMESPACE_PATTERN.match(namespace):
        raise DescriptorError(f"{where}: metadata.namespace is not a valid namespace")
    annotations = metadata.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise DescriptorError(f"{where}: metadata.annotations must map strings to strings")
    spec = document.get("spec", {})
    if spec is not None and not isinstance(spec, dict):
        raise DescriptorError(f"{where}: spec must be a mapping")
    return Descriptor(kind=kind, namespace=namespace, name=name, body=document)


def entity_name(text: str) -> str:
    """A valid Backstage entity name from a slug or key (lowercase, at most 63 characters)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    name = re.sub(r"[-_.]{2,}", "-", name).strip("-_.")[:63].strip("-_.")
    return name or "unnamed"


def storable_text(content: bytes, max_bytes: int) -> str | None:
    """`content` as text a database column can keep (no NUL, within the size limit), or None:
    such a file is re-read in full next time rather than rebuilt from a stored copy."""
    if len(content) > max_bytes or b"\x00" in content:
        return None
    return content.decode("utf-8", errors="replace")
