"""The kinds of setting value: marshmallow fields that environs reads each variable with.

Each error message is what follows `NAME: ` in the one-line configuration error (see
`app.config`), and none repeats a value that may be secret. `Secret` wraps the values that
must never show in a repr, a log line or an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import marshmallow as ma
from marshmallow.validate import Range


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


def _items(value: str) -> list[str]:
    """The non-empty items of a comma-separated value, stripped."""
    return [item.strip() for item in value.split(",") if item.strip()]


class _Setting(ma.fields.Field):
    """A field that reads one environment string (environs hands it over stripped)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        return self.convert(str(value))

    def convert(self, value: str) -> Any:
        raise NotImplementedError


class Text(ma.fields.String):
    """Any string, as given."""


class Upper(_Setting):
    def convert(self, value: str) -> str:
        return value.upper()


class WholeNumber(ma.fields.Integer):
    default_error_messages = {"invalid": "must be a whole number, got {input!r}"}

    def __init__(self, *, minimum: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        what = "positive" if minimum == 1 else f"at least {minimum}"
        self.validators.insert(0, Range(min=minimum, error=f"must be {what}, got {{input}}"))


class PositiveNumber(ma.fields.Float):
    default_error_messages = {
        "invalid": "must be a number, got {input!r}",
        "special": "must be a finite number",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.insert(
            0, Range(min=0, min_inclusive=False, error="must be positive, got {input}")
        )


class Share(ma.fields.Float):
    """A share of something: above 0, at most 1."""

    default_error_messages = {
        "invalid": "must be a number between 0 and 1, got {input!r}",
        "special": "must be a number between 0 and 1",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.insert(
            0,
            Range(
                min=0,
                min_inclusive=False,
                max=1,
                error="must be above 0 and at most 1, got {input}",
            ),
        )


class Rate(ma.fields.Float):
    """A sampling rate: from 0 to 1."""

    default_error_messages = {
        "invalid": "must be a number from 0 to 1, got {input!r}",
        "special": "must be a number from 0 to 1",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.insert(0, Range(min=0, max=1, error="must be from 0 to 1, got {input}"))


class Flag(ma.fields.Boolean):
    truthy = {"1", "true", "yes", "on"}
    falsy = {"0", "false", "no", "off"}
    default_error_messages = {"invalid": "must be true or false, got {input!r}"}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bool:
        lowered = str(value).lower()
        if lowered in self.truthy:
            return True
        if lowered in self.falsy:
            return False
        raise self.make_error("invalid", input=value)


class Choice(_Setting):
    """One of a few words, any case; `error` may word the refusal its own way."""

    def __init__(self, *, choices: tuple[str, ...], error: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices = choices
        self.error = error or f"must be one of {', '.join(choices)}, got {{input!r}}"

    def convert(self, value: str) -> str:
        lowered = value.lower()
        if lowered not in self.choices:
            raise ma.ValidationError(self.error.format(input=value, lowered=lowered))
        return lowered


class Url(_Setting):
    """A URL with one of `schemes`; `strip_slash` drops a trailing `/`."""

    def __init__(
        self, *, schemes: tuple[str, ...], strip_slash: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.schemes = schemes
        self.strip_slash = strip_slash

    def convert(self, value: str) -> Any:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ma.ValidationError(f"not a parsable URL ({exc})") from None
        if parts.scheme not in self.schemes:
            expected = ", ".join(f"{s}://" for s in self.schemes)
            raise ma.ValidationError(f"scheme must be one of {expected}, got {parts.scheme!r}")
        if not parts.netloc and not parts.scheme.startswith("sqlite"):
            raise ma.ValidationError("URL has no host")
        return value.rstrip("/") if self.strip_slash else value


def normalise_database_url(value: str) -> str:
    """Accept Heroku-style `postgres://` and plain `postgresql://`; use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if value.startswith(prefix):
            return "postgresql+psycopg://" + value[len(prefix) :]
    return value


class DatabaseUrl(Url):
    SCHEMES = (
        "sqlite",
        "postgresql",
        "postgres",
        "postgresql+psycopg",
        "sqlite+pysqlite",
        "postgresql+psycopg2",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(schemes=self.SCHEMES, **kwargs)

    def convert(self, value: str) -> str:
        return normalise_database_url(super().convert(value))


class SecretUrl(Url):
    """A URL that carries a key (Sentry's DSN)."""

    def convert(self, value: str) -> Secret:
        return Secret(super().convert(value))


class Secrets(_Setting):
    """Comma-separated secrets (several, to rotate without downtime)."""

    def convert(self, value: str) -> tuple[Secret, ...]:
        return tuple(Secret(item) for item in _items(value))


class Slugs(_Setting):
    """Comma-separated workspace slugs."""

    def convert(self, value: str) -> tuple[str, ...]:
        slugs = tuple(_items(value))
        for slug in slugs:
            if "/" in slug or " " in slug:
                raise ma.ValidationError(f"{slug!r} is not a workspace slug")
        return slugs


class BasicAuth(_Setting):
    """`user:password[,user:password]`, as Flower's `--basic-auth`; never echoes a password."""

    def convert(self, value: str) -> tuple[tuple[str, Secret], ...]:
        pairs: list[tuple[str, Secret]] = []
        for item in _items(value):
            user, colon, password = item.partition(":")
            if not (colon and user and password):
                raise ma.ValidationError(
                    "must be user:password (comma-separated for several); "
                    f"entry {len(pairs) + 1} is not"
                )
            pairs.append((user, Secret(password)))
        return tuple(pairs)


class CalendarDate(_Setting):
    def convert(self, value: str) -> date:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ma.ValidationError(f"must be a date like 2026-11-01, got {value!r}") from None


class CatalogPaths(_Setting):
    def convert(self, value: str) -> tuple[str, ...]:
        paths = tuple(p.strip("/") for p in _items(value) if p.strip("/"))
        if not paths:
            raise ma.ValidationError("give at least one path or glob pattern")
        for path in paths:
            if ".." in path.split("/"):
                raise ma.ValidationError(f"{path!r} leaves the repository")
        return paths


class MappingFile(_Setting):
    """The group mapping file, loaded now so that a bad file stops the process at start."""

    def convert(self, value: str) -> str:
        from app.catalog.mapping import GroupMapping, MappingError

        try:
            GroupMapping.load(value)
        except MappingError as exc:
            raise ma.ValidationError(str(exc)) from None
        return value


class DescriptorKinds(_Setting):
    """The kinds a descriptor may declare: software kinds only, never User or Group."""

    def convert(self, value: str) -> tuple[str, ...]:
        from app.catalog.descriptor_policy import PEOPLE_KINDS, SOFTWARE_KINDS

        canonical = {kind.lower(): kind for kind in SOFTWARE_KINDS}
        people = {kind.lower() for kind in PEOPLE_KINDS}
        kinds: list[str] = []
        for item in _items(value):
            if item.lower() in people:
                raise ma.ValidationError(
                    f"{item} is not allowed: people and groups come only from Bitbucket"
                )
            if item.lower() not in canonical:
                raise ma.ValidationError(f"{item!r} is not one of {', '.join(SOFTWARE_KINDS)}")
            if canonical[item.lower()] not in kinds:
                kinds.append(canonical[item.lower()])
        if not kinds:
            raise ma.ValidationError("give at least one kind, e.g. Component")
        return tuple(kinds)


# Every kind a setting may be declared with (`app.config.setting`).
KINDS: tuple[type[ma.fields.Field], ...] = (
    Text,
    Upper,
    WholeNumber,
    PositiveNumber,
    Share,
    Rate,
    Flag,
    Choice,
    Url,
    DatabaseUrl,
    SecretUrl,
    Secrets,
    Slugs,
    BasicAuth,
    CalendarDate,
    CatalogPaths,
    MappingFile,
    DescriptorKinds,
)
