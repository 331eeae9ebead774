"""A fetched catalog file applied: its record kept (content, ETag, hash, parse error), its
documents parsed and screened, its entities written and the ones it no longer defines
retired; and a repository without a descriptor given its generated component."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.orm import Session

from app.bitbucket.client import RawFile
from app.catalog.descriptor_policy import screen_descriptors
from app.catalog.descriptors import DescriptorError, parse_descriptor, storable_text
from app.catalog.entities import EntityBuilder, RepositoryView
from app.config import Settings
from app.models import CatalogFile, EntitySource, Repository, utcnow
from app.store import retire
from app.sync.entity_writer import EntityWriter, WriteOutcome


class CatalogApply:
    """Writes one repository's files and entities into the session; counts in `counts`."""

    def __init__(
        self,
        session: Session,
        settings: Settings,
        builder: EntityBuilder,
        counts: dict[str, Any],
    ) -> None:
        self.session = session
        self.settings = settings
        self.builder = builder
        self.counts = counts

    def file(
        self,
        repo: Repository,
        view: RepositoryView,
        path: str,
        raw: RawFile | None,
        record: CatalogFile | None,
        writer: EntityWriter,
        outcome: WriteOutcome,
    ) -> bool:
        """Apply one fetched catalog file; True when the file exists."""
        if raw is None:
            self.counts["files_missing"] += 1
            if record is not None and record.deleted_at is None:
                retire(self.session, CatalogFile, ids=[record.id], synchronize=True)
                self.counts["entities_deleted"] += writer.retire_file_entities(record.id, set())
            return False
        fresh_record = record is None
        if record is None:
            record = CatalogFile(repository_id=repo.id, path=path)
            self.session.add(record)
        if raw.not_modified:
            self.counts["files_unchanged"] += 1
            content = record.content or ""
        else:
            self.counts["files_fetched"] += 1
            data = raw.content or b""
            content = data.decode("utf-8", errors="replace")
            record.etag = raw.etag
            record.content_hash = hashlib.sha256(data).hexdigest()
            record.content = storable_text(data, self.settings.descriptor_max_bytes)
            record.fetched_at = utcnow()
            if record.content is None:
                record.etag = None  # never trust a 304 for content we did not keep
        record.commit = repo.head_commit
        record.deleted_at = None
        self.session.flush()
        try:
            descriptors = parse_descriptor(
                content.encode() if raw.not_modified else (raw.content or b""),
                max_bytes=self.settings.descriptor_max_bytes,
                max_documents=self.settings.descriptor_max_documents,
            )
        except DescriptorError as exc:
            # Keep the last good entities; show the error where an operator looks.
            record.parse_error = str(exc)
            self.counts["parse_errors"] += 1
            return True
        # Refused kinds and bbsync's own annotations are reported like a parse error; the
        # file's other documents are still used.
        screened = screen_descriptors(
            descriptors,
            self.settings.descriptor_kinds,
            self.builder.derived_annotations(view, path),
        )
        record.parse_error = screened.report
        self.counts["parse_errors"] += 1 if screened.problems else 0
        file_outcome = WriteOutcome()
        kept: set[str] = set()
        for descriptor in screened.descriptors:
            entity = self.builder.from_descriptor(descriptor, view, path)
            if writer.write(
                entity,
                EntitySource.DESCRIPTOR,
                repository_id=repo.id,
                catalog_file_id=record.id,
                outcome=file_outcome,
            ):
                kept.add(entity.ref)
        record.entity_conflicts = file_outcome.conflicts or None
        if not fresh_record:
            self.counts["entities_deleted"] += writer.retire_file_entities(record.id, kept)
        outcome.written += file_outcome.written
        outcome.unchanged += file_outcome.unchanged
        outcome.conflicts.extend(file_outcome.conflicts)
        return True

    def generated(
        self,
        repo: Repository,
        view: RepositoryView,
        *,
        has_descriptor: bool,
        first_read: bool,
        writer: EntityWriter,
        outcome: WriteOutcome,
    ) -> None:
        """The repository's generated component, when it has no descriptor and components
        are generated; else its generated entities retire. `first_read` (nothing of this
        repository's can be stale) skips the retire statements."""
        if has_descriptor or not self.settings.generate_components:
            if not first_read:
                self.counts["entities_deleted"] += writer.retire_generated(repo.id)
            return
        component = self.builder.generated_component(view)
        writer.write(component, EntitySource.GENERATED, repository_id=repo.id, outcome=outcome)
        if not first_read:
            self.counts["entities_deleted"] += writer.retire_generated(repo.id, {component.ref})
