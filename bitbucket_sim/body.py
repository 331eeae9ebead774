"""Typed reading of JSON request bodies; wrong types are a 400, never a 500."""

from __future__ import annotations

from typing import Any

from bitbucket_sim.errors import bad_request


def as_object(value: Any) -> dict[str, Any]:
    """The body as a JSON object (an absent body is `{}`)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("The request body must be a JSON object")
    return value


def text(body: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    return value


def required_text(body: dict[str, Any], key: str) -> str:
    value = text(body, key)
    if not value:
        raise bad_request(f"{key} is required")
    return value


def flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false")
    return value


def integer(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{key} must be an integer")
    return value


def text_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad_request(f"{key} must be a list of strings")
    return list(value)
