"""The simulated workspace: plain dataclasses, mutated only under the simulator's lock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

PR_STATES = ("OPEN", "MERGED", "DECLINED", "SUPERSEDED")
PIPELINE_RESULTS = ("SUCCESSFUL", "FAILED", "ERROR", "STOPPED", "EXPIRED")
STATUS_STATES = ("INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED")
PERMISSIONS = ("admin", "write", "read")


@dataclass
class Account:
    """A user. `email` is private to the simulator: it links commit authors to accounts."""

    uuid: str
    account_id: str
    display_name: str
    nickname: str
    email: str
    created_on: datetime


@dataclass
class Project:
    key: str
    uuid: str
    name: str
    description: str
    created_on: datetime
    updated_on: datetime
    is_private: bool = True


@dataclass(frozen=True)
class Commit:
    """A commit and the full file tree it points at (paths → bytes)."""

    hash: str
    parents: tuple[str, ...]
    date: datetime
    message: str
    author_raw: str
    author_account_id: str | None
    files: Mapping[str, bytes]


@dataclass
class Participant:
    account_id: str
    role: str  # REVIEWER | PARTICIPANT
    approved: bool
    state: str | None  # approved | changes_requested | None
    participated_on: datetime | None


@dataclass
class PullRequest:
    id: int
    title: str
    description: str
    state: str
    author_id: str
    source_branch: str
    source_commit: str
    destination_branch: str
    destination_commit: str
    created_on: datetime
    updated_on: datetime
    merge_commit: str | None = None
    closed_by_id: str | None = None
    close_source_branch: bool = False
    reason: str = ""
    comment_count: int = 0
    task_count: int = 0
    participants: list[Participant] = field(default_factory=list)

    @property
    def reviewer_ids(self) -> list[str]:
        return [p.account_id for p in self.participants if p.role == "REVIEWER"]


@dataclass
class Pipeline:
    uuid: str
    build_number: int
    state: str  # PENDING | IN_PROGRESS | COMPLETED
    result: str | None
    ref_type: str
    ref_name: str
    commit: str
    trigger: str  # PUSH | MANUAL | SCHEDULE
    creator_id: str | None
    created_on: datetime
    completed_on: datetime | None = None
    duration_in_seconds: int = 0


@dataclass
class CommitStatus:
    uuid: str
    key: str
    state: str
    name: str
    description: str
    refname: str | None
    url: str
    commit: str
    created_on: datetime
    updated_on: datetime


@dataclass
class Hook:
    """A webhook subscription; `repository_uuid` is None for workspace (and project) hooks.

    `project_key` is set only for Data Center project-level hooks; `name` is Data Center's.
    """

    uuid: str
    url: str
    description: str
    active: bool
    events: list[str]
    secret: str | None
    created_at: datetime
    repository_uuid: str | None = None
    all_events: bool = False
    project_key: str | None = None
    name: str = ""
    updated_at: datetime | None = None

    def wants(
        self, event_key: str, repository_uuid: str | None, project_key: str | None = None
    ) -> bool:
        """Whether this subscription receives `event_key` about that repository (or project)."""
        if not self.active:
            return False
        if self.repository_uuid is not None and self.repository_uuid != repository_uuid:
            return False
        if self.project_key is not None and self.project_key != project_key:
            return False
        return self.all_events or event_key in self.events


@dataclass
class Repository:
    uuid: str
    slug: str
    name: str
    description: str
    is_private: bool
    language: str
    base_size: int
    created_on: datetime
    updated_on: datetime
    mainbranch: str
    project_key: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pullrequests: dict[int, PullRequest] = field(default_factory=dict)
    pipelines: list[Pipeline] = field(default_factory=list)
    statuses: list[CommitStatus] = field(default_factory=list)
    user_permissions: dict[str, str] = field(default_factory=dict)
    group_permissions: dict[str, str] = field(default_factory=dict)
    catalog_layout: str = "none"

    @property
    def head(self) -> Commit:
        """The head commit of the main branch."""
        return self.commits[self.branches[self.mainbranch]]

    @property
    def size(self) -> int:
        return self.base_size + sum(len(data) for data in self.head.files.values())

    def find_commit(self, ref: str) -> Commit | None:
        """A commit by full hash or an unambiguous prefix of at least 7 characters."""
        if ref in self.commits:
            return self.commits[ref]
        if len(ref) < 7 or any(c not in "0123456789abcdef" for c in ref):
            return None
        found = [commit for sha, commit in self.commits.items() if sha.startswith(ref)]
        return found[0] if len(found) == 1 else None

    def next_pr_id(self) -> int:
        return max(self.pullrequests, default=0) + 1

    def next_build_number(self) -> int:
        return max((p.build_number for p in self.pipelines), default=0) + 1


@dataclass
class Group:
    slug: str
    name: str
    permission: str
    member_ids: list[str]


@dataclass
class Workspace:
    """The one simulated workspace and everything in it."""

    slug: str
    name: str
    uuid: str
    created_on: datetime
    projects: dict[str, Project] = field(default_factory=dict)
    repositories: dict[str, Repository] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    member_ids: list[str] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)
    hooks: list[Hook] = field(default_factory=list)

    def find_repository(self, key: str) -> Repository | None:
        """A repository by slug (case-insensitive) or by `{uuid}`."""
        repo = self.repositories.get(key.lower())
        if repo is not None:
            return repo
        if key.startswith("{"):
            for candidate in self.repositories.values():
                if candidate.uuid == key:
                    return candidate
        return None

    def find_account(self, key: str) -> Account | None:
        """An account (member or former member) by account id or `{uuid}`."""
        account = self.accounts.get(key)
        if account is not None:
            return account
        for candidate in self.accounts.values():
            if candidate.uuid == key or candidate.nickname == key:
                return candidate
        return None

    @property
    def members(self) -> list[Account]:
        return [self.accounts[account_id] for account_id in self.member_ids]

    def matches(self, key: str) -> bool:
        """Whether `key` (slug or `{uuid}`) names this workspace."""
        return key.lower() == self.slug or key == self.uuid
