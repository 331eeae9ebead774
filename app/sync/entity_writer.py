"""Writing entities into `catalog_entities`: who owns a reference, what wins, what is gone.

- A live entity belongs to one source: a descriptor file, or a repository (generated), or
  Bitbucket itself (project groups). Another source defining the same reference is a
  conflict: reported on the file (or the run), never silently overwritten.
- A descriptor wins over a generated entity with the same reference.
- Entities are soft-deleted (`deleted_at`), so a reference can come back with its history.
- Every write and retirement is logged for the change feed (`app.catalog.changes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog.changes import record_written, retire_entities
from app.catalog.entities import BuiltEntity
from app.models import CatalogEntity, CatalogFile, EntitySource, Repository, utcnow


@dataclass
class WriteOutcome:
    written: int = 0
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)


class EntityWriter:
    def __init__(self, session: Session, workspace: str) -> None:
        self.session = session
        self.workspace = workspace

    def _existing(self, ref: str) -> CatalogEntity | None:
        # Rows added in this unit of work are pending, not yet flushed: look there first.
        for row in self.session.new:
            if isinstance(row, CatalogEntity) and row.entity_ref == ref:
                return row
        with self.session.no_autoflush:
            return self.session.scalars(
                select(CatalogEntity).where(CatalogEntity.entity_ref == ref)
            ).first()

    def _owner(self, entity: CatalogEntity) -> str:
        if entity.catalog_file_id is not None:
            file = self.session.get(CatalogFile, entity.catalog_file_id)
            repo = self.session.get(Repository, file.repository_id) if file else None
            if file is not None and repo is not None:
                return f"{repo.full_name}/{file.path}"
        if entity.repository_id is not None:
            repo = self.session.get(Repository, entity.repository_id)
            if repo is not None:
                return f"{repo.full_name} (generated)"
        return entity.source

    def write(
        self,
        entity: BuiltEntity,
        source: EntitySource,
        repository_id: int | None = None,
        catalog_file_id: int | None = None,
        outcome: WriteOutcome | None = None,
    ) -> bool:
        """Store `entity` for its source unless another live source owns the reference."""
        outcome = outcome if outcome is not None else WriteOutcome()
        existing = self._existing(entity.ref)
        if existing is not None and existing.deleted_at is None:
            same_owner = (
                existing.catalog_file_id == catalog_file_id
                and existing.repository_id == repository_id
                and existing.source == source.value
            )
            descriptor_over_generated = (
                source is EntitySource.DESCRIPTOR
                and existing.source == EntitySource.GENERATED.value
            )
            if not same_owner and not descriptor_over_generated:
                outcome.conflicts.append(
                    f"{entity.ref} is already defined by {self._owner(existing)}"
                )
                return False
            if same_owner and existing.content_hash == entity.content_hash:
                outcome.unchanged += 1
                return True
        row = existing or CatalogEntity(entity_ref=entity.ref)
        row.kind = entity.kind
        row.namespace = entity.namespace
        row.name = entity.name
        row.body = entity.body
        row.content_hash = entity.content_hash
        row.source = source.value
        row.workspace = self.workspace
        row.repository_id = repository_id
        row.catalog_file_id = catalog_file_id
        row.updated_at = utcnow()
        row.deleted_at = None
        self.session.add(row)
        record_written(self.session, row)
        outcome.written += 1
        return True

    def retire_file_entities(self, catalog_file_id: int, keep: set[str]) -> int:
        """Soft-delete what a descriptor file defined before but defines no more."""
        conditions = [CatalogEntity.catalog_file_id == catalog_file_id]
        if keep:
            conditions.append(CatalogEntity.entity_ref.not_in(keep))
        return retire_entities(self.session, *conditions)

    def retire_generated(self, repository_id: int, keep: set[str] | None = None) -> int:
        """Soft-delete a repository's generated entities (it has a descriptor now)."""
        conditions = [
            CatalogEntity.repository_id == repository_id,
            CatalogEntity.source == EntitySource.GENERATED.value,
        ]
        if keep:
            conditions.append(CatalogEntity.entity_ref.not_in(keep))
        return retire_entities(self.session, *conditions)
