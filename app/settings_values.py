"""Parsing single setting values: each parser names the variable in its one-line error.
`Secret` wraps the values that must never show in a log line or an error."""

from __future__ import annotations

from datetime import date
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


class Secret:
    """A string that never shows itself in repr/str (logs, tracebacks, error messages)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise SettingsError(f"{name}: not a parsable URL ({exc})") from None
    if parts.scheme not in schemes:
        expected = ", ".join(f"{s}://" for s in schemes)
        raise SettingsError(f"{name}: scheme must be one of {expected}, got {parts.scheme!r}")
    if not parts.netloc and not parts.scheme.startswith("sqlite"):
        raise SettingsError(f"{name}: URL has no host")
    return value


def whole_number(name: str, value: str, minimum: int = 1) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name}: must be a whole number, got {value!r}") from None
    if number < minimum:
        what = "positive" if minimum == 1 else f"at least {minimum}"
        raise SettingsError(f"{name}: must be {what}, got {number}")
    return number


def positive_number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError(f"{name}: must be a number, got {value!r}") from None
    if number <= 0:
        raise SettingsError(f"{name}: must be positive, got {number}")
    return number


def boolean(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}: must be true or false, got {value!r}")


def choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    lowered = value.strip().lower()
    if lowered not in choices:
        raise SettingsError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    return lowered


def share(name: str, value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        raise SettingsError(f"{name}: must be a number between 0 and 1, got {value!r}") from None
    if not 0 < share <= 1:
        raise SettingsError(f"{name}: must be above 0 and at most 1, got {share}")
    return share


def catalog_paths(value: str) -> tuple[str, ...]:
    paths = tuple(p.strip().strip("/") for p in value.split(",") if p.strip().strip("/"))
    if not paths:
        raise SettingsError("BBSYNC_CATALOG_PATHS: give at least one path or glob pattern")
    for path in paths:
        if ".." in path.split("/"):
            raise SettingsError(f"BBSYNC_CATALOG_PATHS: {path!r} leaves the repository")
    return paths


def rate(name: str, value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise SettingsError(f"{name}: must be a number from 0 to 1, got {value!r}") from None
    if not 0 <= rate <= 1:
        raise SettingsError(f"{name}: must be from 0 to 1, got {rate}")
    return rate


def calendar_date(name: str, value: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SettingsError(f"{name}: must be a date like 2026-11-01, got {value!r}") from None


def mapping_path(value: str) -> str:
    """The group mapping file, checked now so a bad file stops the process at start."""
    if not value:
        return ""
    from app.catalog.mapping import GroupMapping, MappingError

    try:
        GroupMapping.load(value)
    except MappingError as exc:
        raise SettingsError(f"BBSYNC_GROUP_MAPPING: {exc}") from None
    return value


def descriptor_kinds(value: str) -> tuple[str, ...]:
    """The kinds a descriptor may declare: software kinds only, never User or Group."""
    from app.catalog.descriptor_policy import PEOPLE_KINDS, SOFTWARE_KINDS

    name = "BBSYNC_DESCRIPTOR_KINDS"
    canonical = {kind.lower(): kind for kind in SOFTWARE_KINDS}
    kinds: list[str] = []
    for item in (k.strip() for k in value.split(",")):
        if not item:
            continue
        if item.lower() in {k.lower() for k in PEOPLE_KINDS}:
            raise SettingsError(
                f"{name}: {item} is not allowed: people and groups come only from Bitbucket"
            )
        if item.lower() not in canonical:
            raise SettingsError(f"{name}: {item!r} is not one of {', '.join(SOFTWARE_KINDS)}")
        if canonical[item.lower()] not in kinds:
            kinds.append(canonical[item.lower()])
    if not kinds:
        raise SettingsError(f"{name}: give at least one kind, e.g. Component")
    return tuple(kinds)


def tokens(value: str) -> tuple[str, ...]:
    """Comma-separated bearer tokens (several, to rotate without downtime)."""
    return tuple(t.strip() for t in value.split(",") if t.strip())


def basic_auth(name: str, value: str) -> tuple[tuple[str, str], ...]:
    """`user:password[,user:password]`, as Flower's `--basic-auth`; never echoes a password."""
    pairs: list[tuple[str, str]] = []
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        user, colon, password = item.partition(":")
        if not (colon and user and password):
            raise SettingsError(
                f"{name}: must be user:password (comma-separated for several); "
                f"entry {len(pairs) + 1} is not"
            )
        pairs.append((user, password))
    return tuple(pairs)
