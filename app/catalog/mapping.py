"""The optional group mapping file (`BBSYNC_GROUP_MAPPING`): Bitbucket groups and projects
to the Backstage groups an organisation already has, with their parents.

```yaml
groups:                 # Bitbucket group slug → Backstage group
  developers: {name: engineering, parent: company}
projects:               # Bitbucket project key → Backstage group (owner of its components)
  PAY: {name: payments, parent: engineering}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from app.catalog.descriptors import NAME_PATTERN


class MappingError(ValueError):
    pass


@dataclass(frozen=True)
class MappedGroup:
    name: str
    parent: str | None = None


@dataclass(frozen=True)
class GroupMapping:
    groups: dict[str, MappedGroup] = field(default_factory=dict)
    projects: dict[str, MappedGroup] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> GroupMapping:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise MappingError(f"cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise MappingError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict) or set(data) - {"groups", "projects"}:
            raise MappingError(f"{path}: expected only the keys groups and projects")
        return cls(
            groups=_section(data.get("groups") or {}, "groups"),
            projects=_section(data.get("projects") or {}, "projects"),
        )


def _section(section: object, name: str) -> dict[str, MappedGroup]:
    if not isinstance(section, dict):
        raise MappingError(f"{name}: expected a mapping")
    mapped = {}
    for key, value in section.items():
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise MappingError(f"{name}.{key}: expected {{name: ..., parent: ...}}")
        for field_name in ("name", "parent"):
            text = value.get(field_name)
            if text is not None and not NAME_PATTERN.match(str(text)):
                raise MappingError(f"{name}.{key}.{field_name}: {text!r} is not an entity name")
        mapped[str(key)] = MappedGroup(value["name"], value.get("parent"))
    return mapped
