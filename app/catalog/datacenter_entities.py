"""Backstage entities of a Bitbucket Data Center source.

The same entities as Cloud's (descriptor entities with bbsync's annotations, a generated
`Component` per repository without a descriptor, a `Group` per project), with what Backstage's
Data Center integration reads: `backstage.io/source-location` on the repository's `/browse`
URL (the directory Backstage derives from a `…/browse/catalog-info.yaml` location), view and
edit URLs of the descriptor, and `bitbucket.com/project-slug: KEY/slug`, the annotation the
Data Center pull-request plugin reads.

Identity: what bbsync generates (Components, project Groups) lives in a Backstage namespace
named after the server (`bitbucket-example-com`), and a generated Component is named
`{key}-{slug}` (Data Center slugs are unique per project only). So a Cloud workspace and a
Data Center project with the same names never produce the same entity reference; entities a
descriptor declares keep the namespace and name it gives, and a clash with another source is
reported as a conflict, as between two Cloud repositories.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from app.catalog.descriptors import entity_name
from app.catalog.entities import (
    API_VERSION,
    EDIT_URL,
    MANAGED_BY,
    PROJECT_SLUG,
    SOURCE_LOCATION,
    VIEW_URL,
    BuiltEntity,
    EntityBuilder,
    RepositoryView,
    built,
    locations,
    workspace_location,
)
from app.config import Settings
from app.datacenter_settings import DataCenterSettings

SERVER = "bbsync.io/bitbucket-server"  # the Data Center host an entity comes from
DC_PROJECT_KEY = "bbsync.io/bitbucket-project-key"
DC_USERNAME = "bbsync.io/bitbucket-server-username"  # a Data Center user's username (slug)
DC_USER_ID = "bbsync.io/bitbucket-server-user-id"  # its numeric id, which survives renames
DC_GROUP = "bbsync.io/bitbucket-server-group"  # a Data Center group's name


def server_namespace(host: str) -> str:
    """A Backstage namespace for a server: `[a-z0-9]+(-[a-z0-9]+)*`, at most 63 characters."""
    name = re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-")[:63].strip("-")
    return name or "bitbucket-server"


class DataCenterEntityBuilder(EntityBuilder):
    def __init__(self, settings: Settings, server: DataCenterSettings) -> None:
        super().__init__(settings)
        self.server = server
        self.namespace = server_namespace(server.host)

    def repo_url(self, repo: RepositoryView) -> str:
        key, slug = quote(repo.project_key or "", safe=""), quote(repo.slug, safe="")
        return f"{self.server.url}/projects/{key}/repos/{slug}/browse"

    def src_url(self, repo: RepositoryView, path: str = "") -> str:
        return f"{self.repo_url(repo)}/{quote(path)}"

    def annotations(self, repo: RepositoryView, path: str | None = None) -> dict[str, str]:
        folder = path.rsplit("/", 1)[0] + "/" if path and "/" in path else ""
        values = {
            SOURCE_LOCATION: f"url:{self.src_url(repo, folder)}",
            PROJECT_SLUG: f"{repo.project_key}/{repo.slug}",
            SERVER: self.server.host,
            MANAGED_BY: "bbsync",
        }
        if repo.project_key:
            values[DC_PROJECT_KEY] = repo.project_key
        if path:
            values[VIEW_URL] = self.src_url(repo, path)
            values[EDIT_URL] = f"{self.src_url(repo, path)}?mode=edit"
        return values

    def derived_annotations(self, repo: RepositoryView, path: str) -> dict[str, str]:
        return {
            **self.annotations(repo, path),
            **locations(f"url:{self.src_url(repo, path)}"),
        }

    def group_name(self, workspace: str, project_key: str) -> str:
        mapped = self.mapping.projects.get(project_key)
        return mapped.name if mapped else entity_name(project_key)

    def owner_of(self, repo: RepositoryView) -> str:
        if self.settings.component_owner:
            return self.settings.component_owner
        return f"group:{self.namespace}/{self.group_name(repo.workspace, repo.project_key or '')}"

    def generated_component(self, repo: RepositoryView) -> BuiltEntity:
        body = super().generated_component(repo).body
        metadata = body["metadata"]
        metadata["name"] = entity_name(f"{repo.project_key}-{repo.slug}")
        metadata["namespace"] = self.namespace
        metadata["annotations"] = {
            **self.annotations(repo),
            **locations(f"url:{self.repo_url(repo)}"),
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
                "namespace": self.namespace,
                "title": name or key,
                "description": f"Bitbucket Data Center project {key} on {self.server.host}",
                "annotations": {
                    SERVER: self.server.host,
                    DC_PROJECT_KEY: key,
                    MANAGED_BY: "bbsync",
                    **locations(workspace_location(workspace)),
                },
                "links": [
                    {
                        "url": f"{self.server.url}/projects/{quote(key, safe='')}",
                        "title": "Project",
                    }
                ],
            },
            "spec": spec,
        }
        return built(body)

    # -- people ---------------------------------------------------------------------------

    def user_name(self, username: str | None, user_id: str) -> str:
        return entity_name(username or f"user-{user_id}")

    def team_group_name(self, group: str) -> str:
        mapped = self.mapping.groups.get(group)
        return mapped.name if mapped else entity_name(f"group-{group}")

    def user(self, workspace: str, member: dict[str, Any], groups: list[str]) -> BuiltEntity:
        """A `User` for a Data Center user: `spec.profile.email` is what Backstage's Bitbucket
        Server sign-in resolver (`emailMatchingUserEntityProfileEmail`) matches; the username
        and numeric id are annotations a custom resolver can match."""
        annotations = {
            SERVER: self.server.host,
            DC_USER_ID: member["account_id"],
            MANAGED_BY: "bbsync",
            **locations(workspace_location(workspace)),
        }
        if member.get("nickname"):
            annotations[DC_USERNAME] = member["nickname"]
        profile: dict[str, Any] = {"displayName": member.get("display_name") or member["nickname"]}
        if member.get("email"):
            profile["email"] = member["email"]
        body = {
            "apiVersion": API_VERSION,
            "kind": "User",
            "metadata": {
                "name": self.user_name(member.get("nickname"), member["account_id"]),
                "namespace": self.namespace,
                "annotations": annotations,
            },
            "spec": {"profile": profile, "memberOf": sorted(groups)},
        }
        return built(body)

    def team_group(self, workspace: str, group: str, members: list[str]) -> BuiltEntity:
        """A `Group` for a Data Center group; `members` are User names of the same namespace.
        Named `group-{name}` so a group never takes the name of a project's Group."""
        mapped = self.mapping.groups.get(group)
        spec: dict[str, Any] = {
            "type": "team",
            "profile": {"displayName": group},
            "children": [],
            "members": sorted(members),
        }
        if mapped and mapped.parent:
            spec["parent"] = mapped.parent
        body = {
            "apiVersion": API_VERSION,
            "kind": "Group",
            "metadata": {
                "name": self.team_group_name(group),
                "namespace": self.namespace,
                "title": group,
                "annotations": {
                    SERVER: self.server.host,
                    DC_GROUP: group,
                    MANAGED_BY: "bbsync",
                    **locations(workspace_location(workspace)),
                },
            },
            "spec": spec,
        }
        return built(body)
