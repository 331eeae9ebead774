"""Builds the simulated workspace from a seed: same seed and size, same workspace."""

from __future__ import annotations

from datetime import datetime, timedelta

from bitbucket_sim.content import RepositoryTheme, choose_catalog_layout, initial_files, main_module
from bitbucket_sim.ids import BASE_TIME, IdSource
from bitbucket_sim.model import (
    Account,
    Commit,
    CommitStatus,
    Group,
    Participant,
    Pipeline,
    Project,
    PullRequest,
    Repository,
    Workspace,
)

# fmt: off
FIRST_NAMES = (
    "Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Edsger",
    "Radia", "Donald", "Hedy", "Tim", "Katherine", "Guido", "Sophie", "Niklaus", "Joan", "Bjarne",
    "Anita", "John", "Mary", "Yukihiro", "Shafi", "Leslie", "Karen", "Rob", "Evelyn", "Ward",
)
LAST_NAMES = (
    "Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson",
    "Allen", "Dijkstra", "Perlman", "Knuth", "Lamarr", "Berners-Lee", "Johnson", "van Rossum",
    "Wilson", "Wirth", "Clarke", "Stroustrup", "Borg", "McCarthy", "Keller", "Matsumoto",
    "Goldwasser", "Lamport", "Jones", "Pike", "Berezin", "Cunningham",
)
PROJECTS = (
    ("PLAT", "Platform"), ("PAY", "Payments"), ("DATA", "Data"), ("WEB", "Web"),
    ("MOB", "Mobile"), ("INFRA", "Infrastructure"), ("SEC", "Security"), ("OPS", "Operations"),
    ("ID", "Identity"), ("SRCH", "Search"), ("ML", "Machine Learning"), ("CORE", "Core"),
    ("GROW", "Growth"), ("TOOL", "Tooling"), ("QA", "Quality"), ("BILL", "Billing"),
)
GROUPS = (
    ("administrators", "Administrators", "admin"), ("developers", "Developers", "write"),
    ("team-platform", "Team Platform", "write"), ("team-payments", "Team Payments", "write"),
    ("readers", "Readers", "read"),
)
# fmt: on
SLUG_PREFIXES = ("svc", "svc", "svc", "lib", "web", "api", "tool", "data")
LANGUAGES = ("python", "python", "go", "java", "typescript", "javascript", "kotlin", "")
# fmt: off
EXTRA_BRANCHES = (
    "develop", "feature/PLAT-101-login", "feature/search-index", "release/1.4",
    "bugfix/timeout", "hotfix/2.0.1", "feature/ops-42-metrics", "chore/deps",
)
# fmt: on
UNLINKED_AUTHORS = ("CI Bot <ci@build.example>", "Jo Contractor <jo@contractor.example>")
PR_TITLES = (
    "Add metrics",
    "Fix flaky test",
    "Bump dependencies",
    "Refactor client",
    "New endpoint",
)
STATUS_KEYS = ("ci-build", "sonarqube", "security-scan")

EARLIEST = datetime(2023, 1, 1, tzinfo=BASE_TIME.tzinfo)


def build_workspace(slug: str, repo_count: int, seed: int) -> Workspace:
    """The whole workspace for `seed`; deterministic, dated before `BASE_TIME`."""
    ids = IdSource(seed)
    workspace = Workspace(
        slug=slug,
        name=slug.replace("-", " ").title(),
        uuid=ids.uuid(),
        created_on=EARLIEST - timedelta(days=400),
    )
    _add_members(workspace, ids)
    _add_groups(workspace, ids)
    project_count = max(1, round(repo_count / 15))
    for index in range(project_count):
        _add_project(workspace, ids, index)
    for index in range(repo_count):
        repo = _new_repository(workspace, ids, index)
        workspace.repositories[repo.slug] = repo
    return workspace


def _add_members(workspace: Workspace, ids: IdSource) -> None:
    rng = ids.rng
    used: set[str] = set()
    for _ in range(rng.randint(10, 40)):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        nickname = first.lower()
        while nickname in used:
            nickname = f"{first.lower()}{rng.randint(2, 99)}"
        used.add(nickname)
        account = Account(
            uuid=ids.uuid(),
            account_id=ids.account_id(),
            display_name=f"{first} {last}",
            nickname=nickname,
            email=f"{nickname}@{workspace.slug}.example",
            created_on=ids.moment_between(EARLIEST - timedelta(days=300), EARLIEST),
        )
        workspace.accounts[account.account_id] = account
        workspace.member_ids.append(account.account_id)


def _add_groups(workspace: Workspace, ids: IdSource) -> None:
    rng = ids.rng
    for group_slug, name, permission in GROUPS[: rng.randint(2, 5)]:
        size = rng.randint(1, max(1, len(workspace.member_ids) // 2))
        members = sorted(rng.sample(workspace.member_ids, size), key=workspace.member_ids.index)
        workspace.groups[group_slug] = Group(group_slug, name, permission, members)


def _add_project(workspace: Workspace, ids: IdSource, index: int) -> None:
    key, name = PROJECTS[index % len(PROJECTS)]
    if index >= len(PROJECTS):
        key, name = f"{key}{index // len(PROJECTS) + 1}", f"{name} {index // len(PROJECTS) + 1}"
    created = ids.moment_between(EARLIEST, EARLIEST + timedelta(days=90))
    workspace.projects[key] = Project(
        key=key,
        uuid=ids.uuid(),
        name=name,
        description=f"{name} repositories",
        created_on=created,
        updated_on=created,
    )


def _author(workspace: Workspace, ids: IdSource) -> tuple[str, str | None]:
    if ids.rng.random() < 0.2:
        return ids.rng.choice(UNLINKED_AUTHORS), None
    account = workspace.accounts[ids.rng.choice(workspace.member_ids)]
    return f"{account.display_name} <{account.email}>", account.account_id


def _new_repository(workspace: Workspace, ids: IdSource, index: int) -> Repository:
    rng = ids.rng
    slug = f"{rng.choice(SLUG_PREFIXES)}-{index:04d}"
    name = slug if rng.random() < 0.7 else " ".join(part.capitalize() for part in slug.split("-"))
    project_key = rng.choice(list(workspace.projects))
    created = ids.moment_between(EARLIEST, BASE_TIME - timedelta(days=60))
    updated = ids.moment_between(created + timedelta(days=1), BASE_TIME - timedelta(seconds=1))
    owner_group = rng.choice(list(workspace.groups))
    theme = RepositoryTheme(
        slug=slug,
        name=name,
        description=f"{workspace.projects[project_key].name} {slug.split('-')[0]} number {index}",
        language=rng.choice(LANGUAGES),
        owner_group=owner_group,
        system=workspace.projects[project_key].name.lower().replace(" ", "-"),
        workspace=workspace.slug,
    )
    layout = choose_catalog_layout(rng)
    repo = Repository(
        uuid=ids.uuid(),
        slug=slug,
        name=name,
        description=theme.description,
        is_private=rng.random() < 0.9,
        language=theme.language,
        base_size=rng.randint(20_000, 900_000),
        created_on=created,
        updated_on=updated,
        mainbranch="main" if rng.random() < 0.85 else "master",
        project_key=project_key,
        catalog_layout=layout,
    )
    files = initial_files(layout, theme, rng)
    author, author_id = _author(workspace, ids)
    root = Commit(ids.commit_hash(), (), created, "Initial commit", author, author_id, files)
    head_date = ids.moment_between(updated - timedelta(hours=6), updated)
    author, author_id = _author(workspace, ids)
    head = Commit(
        ids.commit_hash(), (root.hash,), head_date, "Update README", author, author_id, files
    )
    repo.commits = {root.hash: root, head.hash: head}
    repo.branches = {repo.mainbranch: head.hash}
    for number, branch in enumerate(rng.sample(EXTRA_BRANCHES, rng.randint(1, 5)), start=1):
        author, author_id = _author(workspace, ids)
        tree = {**files, "src/main.py": main_module(theme, revision=number)}
        date = ids.moment_between(created, head_date)
        message = f"Work on {branch}"
        commit = Commit(ids.commit_hash(), (root.hash,), date, message, author, author_id, tree)
        repo.commits[commit.hash] = commit
        repo.branches[branch] = commit.hash
    _add_pullrequests(workspace, repo, ids)
    _add_pipelines_and_statuses(workspace, repo, ids)
    _add_permissions(workspace, repo, ids)
    return repo


def _add_pullrequests(workspace: Workspace, repo: Repository, ids: IdSource) -> None:
    rng = ids.rng
    sources = [name for name in repo.branches if name != repo.mainbranch]
    states = ("OPEN", "OPEN", "MERGED", "MERGED", "DECLINED", "SUPERSEDED")
    for pr_id in range(1, rng.randint(1, 4) + 1):
        state = rng.choice(states)
        author_id = rng.choice(workspace.member_ids)
        created = ids.moment_between(repo.created_on, BASE_TIME - timedelta(days=2))
        source = rng.choice(sources)
        pr = PullRequest(
            id=pr_id,
            title=f"{rng.choice(PR_TITLES)} ({source})",
            description=f"Changes from {source}.",
            state=state,
            author_id=author_id,
            source_branch=source,
            source_commit=repo.branches[source],
            destination_branch=repo.mainbranch,
            destination_commit=repo.branches[repo.mainbranch],
            created_on=created,
            updated_on=ids.moment_between(created, BASE_TIME - timedelta(seconds=1)),
            comment_count=rng.randint(0, 12),
            task_count=rng.randint(0, 3),
        )
        if state == "MERGED":
            pr.merge_commit = ids.commit_hash()
        if state in ("MERGED", "DECLINED"):
            pr.closed_by_id = rng.choice(workspace.member_ids)
        others = [m for m in workspace.member_ids if m != author_id]
        for reviewer in rng.sample(others, min(len(others), rng.randint(0, 3))):
            approved = state == "MERGED" or rng.random() < 0.4
            state_name = "approved" if approved else None
            approved_on = pr.updated_on if approved else None
            pr.participants.append(
                Participant(reviewer, "REVIEWER", approved, state_name, approved_on)
            )
        pr.participants.append(Participant(author_id, "PARTICIPANT", False, None, created))
        repo.pullrequests[pr_id] = pr


def _add_pipelines_and_statuses(workspace: Workspace, repo: Repository, ids: IdSource) -> None:
    rng = ids.rng
    head = repo.head
    results = ("SUCCESSFUL", "SUCCESSFUL", "SUCCESSFUL", "FAILED", "ERROR", "STOPPED")
    count = rng.randint(0, 3)
    starts = sorted(
        ids.moment_between(head.date, head.date + timedelta(minutes=30)) for _ in range(count)
    )
    for build_number, created in enumerate(starts, start=1):
        trigger = rng.choice(("PUSH", "PUSH", "PUSH", "MANUAL", "SCHEDULE"))
        duration = rng.randint(30, 900)
        repo.pipelines.append(
            Pipeline(
                uuid=ids.uuid(),
                build_number=build_number,
                state="COMPLETED",
                result=rng.choice(results),
                ref_type="branch",
                ref_name=repo.mainbranch,
                commit=head.hash,
                trigger=trigger,
                creator_id=rng.choice(workspace.member_ids) if trigger == "MANUAL" else None,
                created_on=created,
                completed_on=created + timedelta(seconds=duration),
                duration_in_seconds=duration,
            )
        )
    for number, key in enumerate(rng.sample(STATUS_KEYS, rng.randint(1, 3)), start=1):
        created = ids.moment_between(head.date, head.date + timedelta(minutes=10))
        repo.statuses.append(
            CommitStatus(
                uuid=ids.uuid(),
                key=key,
                state=rng.choice(("SUCCESSFUL", "SUCCESSFUL", "FAILED", "INPROGRESS", "STOPPED")),
                name=f"{key} #{number}",
                description=f"{key} for {repo.slug}",
                refname=repo.mainbranch,
                url=f"https://ci.example.com/job/{repo.slug}/{key}/{number}",
                commit=head.hash,
                created_on=created,
                updated_on=created + timedelta(seconds=rng.randint(10, 600)),
            )
        )


def _add_permissions(workspace: Workspace, repo: Repository, ids: IdSource) -> None:
    rng = ids.rng
    for account_id in rng.sample(workspace.member_ids, rng.randint(1, 3)):
        repo.user_permissions[account_id] = rng.choice(("admin", "write", "write", "read"))
    groups = list(workspace.groups)
    for group_slug in rng.sample(groups, min(len(groups), rng.randint(1, 2))):
        repo.group_permissions[group_slug] = workspace.groups[group_slug].permission
