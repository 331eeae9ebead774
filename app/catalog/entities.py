"""Backstage entities built from rows: descriptor entities with Bitbucket annotations added,
generated `Component`s for repositories without a descriptor, and a `Group` per Bitbucket
project to own them. A descriptor's own values always win over what bbsync would add."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from app.catalog.descriptors import Descriptor, entity_name, entity_ref
from app.catalog.mapping import GroupMapping
from app.config import Settings

API_VERSION = "backstage.io/v1alpha1"

# Annotation names Backstage and its Bitbucket plugins read.
REPO_URL = "bitbucket.org/repo-url"
PROJECT_SLUG = "bitbucket.com/project-slug"
WORKSPACE = "bitbucket.org/workspace"
PROJECT_KEY = "bitbucket.org/project-key"
SOURCE_LOCATION = "backstage.io/source-location"
VIEW_URL = "backstage.io/view-url"
EDIT_URL = "backstage.io/edit-url"
MANAGED_BY = "bbsync.io/managed-by"
# Where Backstage says an entity comes from ("View source", the inspect dialog); its catalog
# refuses to process an entity without them.
LOCATION = "backstage.io/managed-by-location"
ORIGIN_LOCATION = "backstage.io/managed-by-origin-location"


def locations(target: str) -> dict[str, str]:
    """Both location annotations for a location reference such as `url:https://…`."""
    return {LOCATION: target, ORIGIN_LOCATION: target}


def workspace_location(workspace: str) -> str:
    """The location of what Bitbucket itself defines (people, groups): stable per workspace."""
    return f"bbsync:{workspace}"


def served_body(body: dict[str, Any], source: str, workspace: str | None) -> dict[str, Any]:
    """The entity as served to Backstage. Entities stored before bbsync set the location
    annotations get them here, from what they carry (built ones have them already)."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    if LOCATION in annotations and ORIGIN_LOCATION in annotations:
        return body
    if source == "descriptor" and annotations.get(VIEW_URL):
        target = f"url:{annotations[VIEW_URL]}"
    elif source == "generated" and annotations.get(REPO_URL):
        target = f"url:{annotations[REPO_URL]}"
    else:
        target = workspace_location(workspace or "bitbucket")
    copy_ = copy.deepcopy(body)
    copy_.setdefault("metadata", {})["annotations"] = {**annotations, **locations(target)}
    return copy_


@dataclass(frozen=True)
class RepositoryView:
    """What the catalog needs to know about a repository (read from its row)."""

    workspace: str
    slug: str
    name: str
    description: str
    language: str
    default_branch: str
    project_key: str | None
    project_name: str | None


@dataclass(frozen=True)
class BuiltEntity:
    ref: str
    kind: str
    namespace: str
    name: str
    body: dict[str, Any]
    content_hash: str


def content_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def built(body: dict[str, Any]) -> BuiltEntity:
    metadata = body["metadata"]
    namespace = metadata.get("namespace", "default")
    return BuiltEntity(
        ref=entity_ref(body["kind"], namespace, metadata["name"]),
        kind=body["kind"],
        namespace=namespace,
        name=metadata["name"],
        body=body,
        content_hash=content_hash(body),
    )


class EntityBuilder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.web = settings.bitbucket_web_url
        self.mapping = (
            GroupMapping.load(settings.group_mapping_path)
            if settings.group_mapping_path
            else GroupMapping()
        )

    def repo_url(self, repo: RepositoryView) -> str:
        return f"{self.web}/{repo.workspace}/{repo.slug}"

    def src_url(self, repo: RepositoryView, path: str = "") -> str:
        return f"{self.repo_url(repo)}/src/{repo.default_branch}/{path}"

    def annotations(self, repo: RepositoryView, path: str | None = None) -> dict[str, str]:
        """The annotations every entity from `repo` carries (`path`: its descriptor file)."""
        folder = path.rsplit("/", 1)[0] + "/" if path and "/" in path else ""
        values = {
            REPO_URL: self.repo_url(repo),
            SOURCE_LOCATION: f"url:{self.src_url(repo, folder)}",
            PROJECT_SLUG: f"{repo.workspace}/{repo.slug}",
            WORKSPACE: repo.workspace,
            MANAGED_BY: "bbsync",
        }
        if repo.project_key:
            values[PROJECT_KEY] = repo.project_key
        if path:
            values[VIEW_URL] = self.src_url(repo, path)
            values[EDIT_URL] = f"{self.src_url(repo, path)}?mode=edit"
        return values

    def from_descriptor(
        self, descriptor: Descriptor, repo: RepositoryView, path: str
    ) -> BuiltEntity:
        body = copy.deepcopy(descriptor.body)
        metadata = body.setdefault("metadata", {})
        own = metadata.get("annotations") or {}
        # The file's own values win, except where it lives: a descriptor cannot point
        # Backstage elsewhere.
        where = locations(f"url:{self.src_url(repo, path)}")
        metadata["annotations"] = {**self.annotations(repo, path), **own, **where}
        return built(body)

    def group_name(self, workspace: str, project_key: str) -> str:
        mapped = self.mapping.projects.get(project_key)
        return mapped.name if mapped else entity_name(f"{workspace}-{project_key}")

    def owner_of(self, repo: RepositoryView) -> str:
        if self.settings.component_owner:
            return self.settings.component_owner
        if repo.project_key:
            return f"group:default/{self.group_name(repo.workspace, repo.project_key)}"
        return f"group:default/{entity_name(repo.workspace)}"

    def generated_component(self, repo: RepositoryView) -> BuiltEntity:
        metadata: dict[str, Any] = {
            "name": entity_name(repo.slug),
            "title": repo.name or repo.slug,
            "annotations": {
                **self.annotations(repo),
                **locations(f"url:{self.repo_url(repo)}"),
            },
            "links": [{"url": self.repo_url(repo), "title": "Repository"}],
        }
        if repo.description:
            metadata["description"] = repo.description
        if repo.language:
            tag = entity_name(repo.language)[:63]
            metadata["tags"] = [tag]
        body = {
            "apiVersion": API_VERSION,
            "kind": "Component",
            "metadata": metadata,
            "spec": {
                "type": self.settings.component_type,
                "lifecycle": self.settings.component_lifecycle,
                "owner": self.owner_of(repo),
            },
        }
        return built(body)

    def project_group(self, workspace: str, key: str, name: str) -> BuiltEntity:
        spec: dict[str, Any] = {
            "type": "project",
            "profile": {"displayName": name or key},
            "children": [],
        }
        mapped = self.mapping.projects.get(key)
        if mapped and mapped.parent:
            spec["parent"] = mapped.parent
        body = {
            "apiVersion": API_VERSION,
            "kind": "Group",
            "metadata": {
                "name": self.group_name(workspace, key),
                "title": name or key,
                "description": f"Bitbucket project {key} in workspace {workspace}",
                "annotations": {
                    WORKSPACE: workspace,
                    PROJECT_KEY: key,
                    MANAGED_BY: "bbsync",
                    **locations(workspace_location(workspace)),
                },
                "links": [
                    {"url": f"{self.web}/{workspace}/workspace/projects/{key}", "title": "Project"}
                ],
            },
            "spec": spec,
        }
        return built(body)

    def workspace_group(self, workspace: str) -> BuiltEntity:
        """The owner of repositories outside any project (rare: every repo has one today)."""
        body = {
            "apiVersion": API_VERSION,
            "kind": "Group",
            "metadata": {
                "name": entity_name(workspace),
                "title": workspace,
                "annotations": {
                    WORKSPACE: workspace,
                    MANAGED_BY: "bbsync",
                    **locations(workspace_location(workspace)),
                },
            },
            "spec": {"type": "workspace", "children": []},
        }
        return built(body)
