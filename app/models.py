"""SQLAlchemy 2.0 typed models: what bbsync mirrors from Bitbucket and serves to Backstage.

Bitbucket UUIDs (with braces, as Bitbucket writes them) are the identity of everything that
comes from Bitbucket; our integer ids are only for foreign keys. Rows are soft-deleted
(`deleted_at`) so that a repository's history survives a rename or a removal.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints so Alembic migrations are stable across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
# Python None stored as SQL NULL, not JSON `null`, so that `IS NULL` filters mean "none".
NullableJSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(38), unique=True)
    slug: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    projects: Mapped[list[Project]] = relationship(back_populates="workspace")
    repositories: Mapped[list[Repository]] = relationship(back_populates="workspace")


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("workspace_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(38), unique=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255), default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    workspace: Mapped[Workspace] = relationship(back_populates="projects")


class Repository(Base):
    __tablename__ = "repositories"
    __table_args__ = (Index(None, "workspace_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(38), unique=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    slug: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    is_private: Mapped[bool] = mapped_column(default=True)
    language: Mapped[str] = mapped_column(String(64), default="")
    default_branch: Mapped[str | None] = mapped_column(String(255))
    head_commit: Mapped[str | None] = mapped_column(String(40))
    created_on: Mapped[datetime | None]
    updated_on: Mapped[datetime | None]
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
    # What the catalog files were last read at: the `updated_on` and head commit then.
    # A repository whose values still match costs no file fetch.
    catalog_checked_on: Mapped[datetime | None]
    catalog_checked_head: Mapped[str | None] = mapped_column(String(40))
    last_push_at: Mapped[datetime | None]
    # Incremental reconciliation of pull requests: the newest `updated_on` stored so far,
    # advanced only after a complete walk; and when activity was last reconciled.
    pull_requests_cursor: Mapped[datetime | None]
    activity_reconciled_at: Mapped[datetime | None]
    # When the people sync last read this repository's permissions in full (the walk goes a
    # share at a time, so revocations apply only to repositories read since).
    permissions_read_at: Mapped[datetime | None]
    # A webhook-driven catalog refresh that failed its last attempt: the catalog may be
    # stale. Cleared by the next refresh or clean catalog run that reads the repository.
    catalog_refresh_error: Mapped[str | None] = mapped_column(Text)
    catalog_refresh_failed_at: Mapped[datetime | None]

    workspace: Mapped[Workspace] = relationship(back_populates="repositories")
    project: Mapped[Project | None] = relationship()
    catalog_files: Mapped[list[CatalogFile]] = relationship(back_populates="repository")


class CatalogFile(Base):
    """A descriptor file (catalog-info.yaml) as last fetched from a repository."""

    __tablename__ = "catalog_files"
    __table_args__ = (UniqueConstraint("repository_id", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    commit: Mapped[str | None] = mapped_column(String(40))
    etag: Mapped[str | None] = mapped_column(String(255))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    parse_error: Mapped[str | None] = mapped_column(Text)
    # The last content read (descriptors are small and capped): entities are rebuilt from it
    # when only the repository changed (rename, new default branch) and the file answers 304.
    content: Mapped[str | None] = mapped_column(Text)
    entity_conflicts: Mapped[list[str] | None] = mapped_column(NullableJSONType)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]

    repository: Mapped[Repository] = relationship(back_populates="catalog_files")


class EntitySource(enum.StrEnum):
    DESCRIPTOR = "descriptor"  # read from a catalog-info.yaml
    GENERATED = "generated"  # made by bbsync for a repository without one
    BITBUCKET = "bitbucket"  # project groups derived from Bitbucket projects
    PEOPLE = "people"  # users and groups mirrored from workspace members and groups


class CatalogEntity(Base):
    """A Backstage entity as served to Backstage: `body` is the full entity document."""

    __tablename__ = "catalog_entities"

    id: Mapped[int] = mapped_column(primary_key=True)
    entity_ref: Mapped[str] = mapped_column(String(512), unique=True)  # kind:namespace/name
    kind: Mapped[str] = mapped_column(String(64), index=True)
    namespace: Mapped[str] = mapped_column(String(255), default="default")
    name: Mapped[str] = mapped_column(String(255))
    body: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32), default=EntitySource.DESCRIPTOR.value)
    workspace: Mapped[str | None] = mapped_column(String(255), index=True)
    repository_id: Mapped[int | None] = mapped_column(
        ForeignKey("repositories.id", ondelete="SET NULL"), index=True
    )
    catalog_file_id: Mapped[int | None] = mapped_column(
        ForeignKey("catalog_files.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None]

    repository: Mapped[Repository | None] = relationship()


class CatalogChange(Base):
    """One change of a catalog entity (written or retired), numbered in commit order: the
    change feed `GET /catalog/changes` serves the entity's state as of each number. A row
    without an entity is the floor the retention left: changes up to it are gone."""

    __tablename__ = "catalog_changes"
    # AUTOINCREMENT: SQLite never hands out a number again, even after pruning the newest.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[int | None] = mapped_column(
        ForeignKey("catalog_entities.id", ondelete="CASCADE"), index=True
    )
    changed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class SyncStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PAUSED = "paused"  # stopped for want of budget; resumes from `cursor`
    SKIPPED = "skipped"  # another sync of the same kind and workspace held the lock
    PARKED = "parked"  # its worker died twice on it: not resumed until an operator looks


class SyncRun(Base):
    """One run of a sync (full, repositories, members…): what it did and what it cost."""

    __tablename__ = "sync_runs"
    __table_args__ = (Index(None, "kind", "workspace", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    workspace: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=SyncStatus.RUNNING.value)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    api_calls: Mapped[int] = mapped_column(Integer, default=0)
    calls_by_family: Mapped[dict[str, Any]] = mapped_column(default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    # Touched every few seconds while a worker runs it: a stale one means the worker is gone.
    heartbeat_at: Mapped[datetime | None]
    task_id: Mapped[str | None] = mapped_column(String(255))


class ParkedTask(Base):
    """A task whose deliveries killed their worker twice: kept out of the queue for an
    operator (`bbsync status`, `/metrics`) instead of being redelivered forever."""

    __tablename__ = "parked_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[str] = mapped_column(String(255), unique=True)
    task_name: Mapped[str] = mapped_column(String(255), index=True)
    args: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    reason: Mapped[str] = mapped_column(Text)
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    parked_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # stored; not yet handed to the broker (or the broker was down)
    QUEUED = "queued"
    PROCESSED = "processed"
    IGNORED = "ignored"  # an event bbsync does not handle: acknowledged, not processed
    FAILED = "failed"


class WebhookDelivery(Base):
    """The outbox: every webhook delivery that got a 2xx, stored before the answer."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index(None, "status", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_uuid: Mapped[str] = mapped_column(String(64), unique=True)
    # SHA-256 of the raw body: a captured delivery replayed under a new (unsigned)
    # X-Request-UUID is still a duplicate. Null for deliveries stored before it existed.
    body_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    # True when text the database cannot hold (NUL, unpaired surrogates) was replaced by
    # U+FFFD in `body`; the signature was checked on the original bytes.
    body_sanitized: Mapped[bool] = mapped_column(default=False, server_default=false())
    hook_uuid: Mapped[str | None] = mapped_column(String(64))
    event_key: Mapped[str] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    repository_uuid: Mapped[str | None] = mapped_column(String(38), index=True)
    repository_full_name: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    processing_ms: Mapped[int | None] = mapped_column(Integer)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class PullRequest(Base):
    __tablename__ = "pull_requests"
    __table_args__ = (
        UniqueConstraint("repository_id", "number"),
        Index(None, "repository_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # Bitbucket's per-repository id
    title: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), index=True)
    author_account_id: Mapped[str | None] = mapped_column(String(128))
    author_display_name: Mapped[str | None] = mapped_column(String(255))
    source_branch: Mapped[str | None] = mapped_column(String(255))
    destination_branch: Mapped[str | None] = mapped_column(String(255))
    source_commit: Mapped[str | None] = mapped_column(String(40))
    destination_commit: Mapped[str | None] = mapped_column(String(40))
    merge_commit: Mapped[str | None] = mapped_column(String(40))
    comment_count: Mapped[int | None] = mapped_column(Integer)
    task_count: Mapped[int | None] = mapped_column(Integer)
    reviewers: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_on: Mapped[datetime | None]
    updated_on: Mapped[datetime | None]
    closed_on: Mapped[datetime | None]


class CommitStatus(Base):
    """A build result on a commit; `key` identifies the build."""

    __tablename__ = "commit_statuses"
    __table_args__ = (
        UniqueConstraint("repository_id", "commit_hash", "key"),
        Index(None, "repository_id", "updated_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    commit_hash: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    refname: Mapped[str | None] = mapped_column(String(255))
    url: Mapped[str | None] = mapped_column(Text)
    created_on: Mapped[datetime | None]
    updated_on: Mapped[datetime | None]


class Pipeline(Base):
    """A Bitbucket Pipelines run."""

    __tablename__ = "pipelines"
    __table_args__ = (Index(None, "repository_id", "created_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(38), unique=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    build_number: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # PENDING | IN_PROGRESS | COMPLETED
    result: Mapped[str | None] = mapped_column(String(16))  # SUCCESSFUL | FAILED | ERROR | …
    trigger: Mapped[str | None] = mapped_column(String(32))
    ref_type: Mapped[str | None] = mapped_column(String(32))
    ref_name: Mapped[str | None] = mapped_column(String(255))
    commit_hash: Mapped[str | None] = mapped_column(String(40))
    duration_seconds: Mapped[int | None] = mapped_column(Integer)
    created_on: Mapped[datetime | None]
    completed_on: Mapped[datetime | None]


class WorkspaceMember(Base):
    """A workspace member as last listed; `removed_at` once Bitbucket stops listing them."""

    __tablename__ = "workspace_members"
    __table_args__ = (UniqueConstraint("workspace_id", "account_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(String(128))
    uuid: Mapped[str | None] = mapped_column(String(38), index=True)
    nickname: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    avatar_url: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(255))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None]


class BitbucketGroup(Base):
    __tablename__ = "bitbucket_groups"
    __table_args__ = (UniqueConstraint("workspace_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    slug: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255), default="")
    permission: Mapped[str | None] = mapped_column(String(16))
    members: Mapped[list[str] | None] = mapped_column(JSONType)  # account ids
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None]


class RepositoryPermission(Base):
    """Effective access of a user (account id) or group (slug) to a repository."""

    __tablename__ = "repository_permissions"
    __table_args__ = (UniqueConstraint("repository_id", "principal_type", "principal"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id", ondelete="CASCADE"))
    principal_type: Mapped[str] = mapped_column(String(8))  # user | group
    principal: Mapped[str] = mapped_column(String(255), index=True)
    permission: Mapped[str] = mapped_column(String(16))  # admin | write | read
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None]


class AccessAudit(Base):
    """Who gained or lost access, and every identity-aware action tried: an operator's log."""

    __tablename__ = "access_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    workspace: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(512))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
