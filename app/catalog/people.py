"""`User` and `Group` entities for Bitbucket workspace members and groups, with the
annotations Backstage's Bitbucket sign-in resolvers look up."""

from __future__ import annotations

from typing import Any

from app.catalog.descriptors import entity_name
from app.catalog.entities import (
    API_VERSION,
    MANAGED_BY,
    WORKSPACE,
    BuiltEntity,
    built,
    locations,
    workspace_location,
)
from app.catalog.mapping import GroupMapping

USER_ID = "bitbucket.org/user-id"
USER_UUID = "bitbucket.org/uuid"
USERNAME = "bitbucket.org/username"
GROUP_SLUG = "bitbucket.org/group"


def user_name(nickname: str | None, account_id: str) -> str:
    return entity_name(nickname or account_id)


def group_entity_name(workspace: str, slug: str, mapping: GroupMapping) -> str:
    mapped = mapping.groups.get(slug)
    return mapped.name if mapped else entity_name(f"{workspace}-{slug}")


def user_entity(workspace: str, member: dict[str, Any], groups: list[str]) -> BuiltEntity:
    """A `User` for a workspace member; `groups` are Group entity names it belongs to."""
    annotations = {
        USER_ID: member["account_id"],
        WORKSPACE: workspace,
        MANAGED_BY: "bbsync",
        **locations(workspace_location(workspace)),
    }
    if member.get("uuid"):
        annotations[USER_UUID] = member["uuid"]
    if member.get("nickname"):
        annotations[USERNAME] = member["nickname"]
    profile: dict[str, Any] = {"displayName": member.get("display_name") or member["account_id"]}
    if member.get("email"):
        profile["email"] = member["email"]
    if member.get("avatar_url"):
        profile["picture"] = member["avatar_url"]
    body = {
        "apiVersion": API_VERSION,
        "kind": "User",
        "metadata": {
            "name": user_name(member.get("nickname"), member["account_id"]),
            "annotations": annotations,
        },
        "spec": {"profile": profile, "memberOf": sorted(groups)},
    }
    return built(body)


def group_entity(
    workspace: str, slug: str, name: str, members: list[str], mapping: GroupMapping
) -> BuiltEntity:
    """A `Group` for a Bitbucket group; `members` are User entity names."""
    mapped = mapping.groups.get(slug)
    spec: dict[str, Any] = {
        "type": "team",
        "profile": {"displayName": name or slug},
        "children": [],
        "members": sorted(members),
    }
    if mapped and mapped.parent:
        spec["parent"] = mapped.parent
    body = {
        "apiVersion": API_VERSION,
        "kind": "Group",
        "metadata": {
            "name": group_entity_name(workspace, slug, mapping),
            "title": name or slug,
            "annotations": {
                GROUP_SLUG: slug,
                WORKSPACE: workspace,
                MANAGED_BY: "bbsync",
                **locations(workspace_location(workspace)),
            },
        },
        "spec": spec,
    }
    return built(body)
