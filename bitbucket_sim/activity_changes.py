"""Live changes to pull requests, commit statuses, pipelines and members.

Callers hold `Simulator.lock`. Pull request and status changes fire their webhooks;
pipelines and membership have no webhook event on Bitbucket Cloud.
"""

from __future__ import annotations

from typing import Any

from bitbucket_sim import body as fields
from bitbucket_sim.errors import bad_request, not_found
from bitbucket_sim.model import (
    PIPELINE_RESULTS,
    STATUS_STATES,
    Account,
    Commit,
    CommitStatus,
    Participant,
    Pipeline,
    PullRequest,
    Repository,
)
from bitbucket_sim.repo_changes import resolve_ref
from bitbucket_sim.runtime import Simulator
from bitbucket_sim.webhook_payloads import RefChange

PR_ACTIONS = ("update", "approve", "unapprove", "merge", "decline")


def _reviewers(sim: Simulator, keys: list[str]) -> list[Participant]:
    participants = []
    for key in keys:
        account = sim.workspace.find_account(key)
        if account is None:
            raise bad_request(f"Unknown reviewer {key!r}")
        participants.append(Participant(account.account_id, "REVIEWER", False, None, None))
    return participants


def open_pullrequest(sim: Simulator, slug: str, body: dict[str, Any]) -> PullRequest:
    """Open a pull request from an existing branch; fires `pullrequest:created`."""
    repo = sim.repository(slug)
    source = fields.required_text(body, "source")
    destination = fields.text(body, "destination") or repo.mainbranch
    for branch in (source, destination):
        if branch not in repo.branches:
            raise bad_request(f"Branch {branch!r} does not exist")
    if source == destination:
        raise bad_request("Source and destination must differ")
    author = sim.actor(fields.text(body, "author"))
    now = sim.clock.now()
    pr = PullRequest(
        id=repo.next_pr_id(),
        title=fields.text(body, "title") or f"Merge {source}",
        description=fields.text(body, "description") or "",
        state="OPEN",
        author_id=author.account_id,
        source_branch=source,
        source_commit=repo.branches[source],
        destination_branch=destination,
        destination_commit=repo.branches[destination],
        created_on=now,
        updated_on=now,
        close_source_branch=fields.flag(body, "close_source_branch", False),
    )
    pr.participants = _reviewers(sim, fields.text_list(body, "reviewers"))
    repo.pullrequests[pr.id] = pr
    sim.events.pullrequest_changed("create", repo, pr, author)
    return pr


def participant_of(pr: PullRequest, account: Account) -> Participant:
    """The account's participant entry, added as PARTICIPANT when missing."""
    for participant in pr.participants:
        if participant.account_id == account.account_id:
            return participant
    participant = Participant(account.account_id, "PARTICIPANT", False, None, None)
    pr.participants.append(participant)
    return participant


def _merge(sim: Simulator, repo: Repository, pr: PullRequest, actor: Account) -> None:
    """A merge commit on the destination, announced by `repo:push` as on Bitbucket."""
    destination_head = repo.commits[repo.branches[pr.destination_branch]]
    source_head = repo.commits[repo.branches.get(pr.source_branch, pr.source_commit)]
    tree = {**destination_head.files, **source_head.files}
    message = f"Merged in {pr.source_branch} (pull request #{pr.id})"
    raw = f"{actor.display_name} <{actor.email}>"
    parents = (destination_head.hash, source_head.hash)
    merge = Commit(
        sim.ids.commit_hash(), parents, sim.clock.now(), message, raw, actor.account_id, tree
    )
    repo.commits[merge.hash] = merge
    repo.branches[pr.destination_branch] = merge.hash
    if sim.config.push_updates_updated_on:
        repo.updated_on = merge.date
    pr.merge_commit = merge.hash
    pr.destination_commit = destination_head.hash
    destination = pr.destination_branch
    change = RefChange("branch", destination, destination_head.hash, merge.hash, commits=[merge])
    sim.events.pushed(repo, [change], actor, merge=True)
    if pr.close_source_branch and pr.source_branch != repo.mainbranch:
        repo.branches.pop(pr.source_branch, None)


def act_on_pullrequest(
    sim: Simulator, slug: str, pr_id: int, action: str, body: dict[str, Any]
) -> PullRequest:
    """update | approve | unapprove | merge | decline, firing the matching `pullrequest:*`."""
    repo = sim.repository(slug)
    pr = repo.pullrequests.get(pr_id)
    if pr is None:
        raise not_found(f"Pull request {pr_id} not found")
    if action not in PR_ACTIONS:
        raise not_found(f"Unknown pull request action {action!r}")
    if pr.state != "OPEN":
        raise bad_request(f"Pull request {pr_id} is {pr.state}, not OPEN")
    actor = sim.actor(fields.text(body, "actor") or fields.text(body, "user"))
    now = sim.clock.now()
    approval_on = None
    previous: dict[str, Any] = {
        "title": pr.title,
        "description": pr.description,
        "destination_branch": pr.destination_branch,
        "reviewer_ids": pr.reviewer_ids,
        "participants": {p.account_id: (p.approved, p.state) for p in pr.participants},
    }
    if action == "update":
        pr.title = fields.text(body, "title") or pr.title
        pr.description = fields.text(body, "description", pr.description) or ""
        if "reviewers" in body:
            others = [p for p in pr.participants if p.role != "REVIEWER"]
            pr.participants = _reviewers(sim, fields.text_list(body, "reviewers")) + others
        pr.source_commit = repo.branches.get(pr.source_branch, pr.source_commit)
    elif action in ("approve", "unapprove"):
        participant = participant_of(pr, actor)
        participant.approved = action == "approve"
        participant.state = "approved" if participant.approved else None
        participant.participated_on = now
        approval_on = now if action == "approve" else None
    elif action == "merge":
        _merge(sim, repo, pr, actor)
        pr.state, pr.closed_by_id = "MERGED", actor.account_id
    else:
        pr.state, pr.closed_by_id = "DECLINED", actor.account_id
        pr.reason = fields.text(body, "reason") or ""
    pr.updated_on = now
    sim.events.pullrequest_changed(action, repo, pr, actor, approval_on, previous)
    return pr


def set_commit_status(
    sim: Simulator, slug: str, body: dict[str, Any], commit_ref: str | None = None
) -> tuple[Repository, CommitStatus, bool]:
    """Create or update the status `key` on a commit; returns `(repo, status, created)`.

    Fires `repo:commit_status_created` or `repo:commit_status_updated`.
    """
    repo = sim.repository(slug)
    ref = commit_ref or fields.text(body, "commit") or repo.mainbranch
    sha = resolve_ref(repo, ref)
    if sha is None:
        raise not_found(f"Commit {ref!r} not found")
    key = fields.required_text(body, "key")
    state = fields.required_text(body, "state").upper()
    if state not in STATUS_STATES:
        raise bad_request(f"state must be one of {', '.join(STATUS_STATES)}")
    now = sim.clock.now()
    existing = next((s for s in repo.statuses if s.commit == sha and s.key == key), None)
    url = fields.text(body, "url") or f"https://ci.example.com/job/{repo.slug}/{key}"
    refname = fields.text(body, "refname")
    if refname is None and ref in repo.branches:
        refname = ref
    if existing is None:
        status = CommitStatus(
            uuid=sim.ids.uuid(),
            key=key,
            state=state,
            name=fields.text(body, "name") or key,
            description=fields.text(body, "description") or "",
            refname=refname,
            url=url,
            commit=sha,
            created_on=now,
            updated_on=now,
        )
        repo.statuses.append(status)
    else:
        status = existing
        status.state, status.updated_on = state, now
        status.url = fields.text(body, "url") or status.url
        status.name = fields.text(body, "name") or status.name
        status.description = fields.text(body, "description", status.description) or ""
        status.refname = refname or status.refname
    actor = sim.actor(fields.text(body, "actor"))
    sim.events.commit_status_changed(repo, status, actor, existing is None)
    return repo, status, existing is None


def create_pipeline(sim: Simulator, slug: str, body: dict[str, Any], actor: Account) -> Pipeline:
    """A PENDING pipeline for a `pipeline_ref_target` (the API's `POST .../pipelines/`)."""
    repo = sim.repository(slug)
    target = body.get("target")
    if not isinstance(target, dict) or target.get("type") != "pipeline_ref_target":
        raise bad_request("target must be a pipeline_ref_target")
    ref_type = target.get("ref_type", "branch")
    ref_name = target.get("ref_name")
    if ref_type not in ("branch", "tag") or not isinstance(ref_name, str):
        raise bad_request("target needs ref_type branch or tag and a ref_name")
    table = repo.branches if ref_type == "branch" else repo.tags
    if ref_name not in table:
        raise bad_request(f"{ref_type} {ref_name!r} not found in {repo.slug}")
    pipeline = Pipeline(
        uuid=sim.ids.uuid(),
        build_number=repo.next_build_number(),
        state="PENDING",
        result=None,
        ref_type=ref_type,
        ref_name=ref_name,
        commit=table[ref_name],
        trigger="MANUAL",
        creator_id=actor.account_id,
        created_on=sim.clock.now(),
    )
    repo.pipelines.append(pipeline)
    return pipeline


def find_pipeline(repo: Repository, key: str) -> Pipeline:
    """A pipeline by `{uuid}` (braces optional) or build number."""
    bare = key.strip("{}")
    for pipeline in repo.pipelines:
        if pipeline.uuid.strip("{}") == bare or str(pipeline.build_number) == key:
            return pipeline
    raise not_found(f"Pipeline {key} not found")


def advance_pipeline(sim: Simulator, slug: str, key: str, result: str | None) -> Pipeline:
    """Start a pipeline (`result` None) or complete it with `result`."""
    repo = sim.repository(slug)
    pipeline = find_pipeline(repo, key)
    if pipeline.state == "COMPLETED":
        raise bad_request(f"Pipeline {key} is already completed")
    if result is None:
        pipeline.state = "IN_PROGRESS"
        return pipeline
    result = result.upper()
    if result not in PIPELINE_RESULTS:
        raise bad_request(f"result must be one of {', '.join(PIPELINE_RESULTS)}")
    now = sim.clock.now()
    pipeline.state, pipeline.result, pipeline.completed_on = "COMPLETED", result, now
    pipeline.duration_in_seconds = max(1, int((now - pipeline.created_on).total_seconds()))
    return pipeline


def add_member(sim: Simulator, body: dict[str, Any]) -> Account:
    """A new account joining the workspace."""
    ws = sim.workspace
    display_name = fields.required_text(body, "display_name")
    nickname = fields.text(body, "nickname") or display_name.split()[0].lower()
    taken = {account.nickname for account in ws.accounts.values()}
    base, suffix = nickname, 2
    while nickname in taken:
        nickname, suffix = f"{base}{suffix}", suffix + 1
    account = Account(
        uuid=sim.ids.uuid(),
        account_id=sim.ids.account_id(),
        display_name=display_name,
        nickname=nickname,
        email=fields.text(body, "email") or f"{nickname}@{ws.slug}.example",
        created_on=sim.clock.now(),
    )
    ws.accounts[account.account_id] = account
    ws.member_ids.append(account.account_id)
    return account


def remove_group(sim: Simulator, slug: str) -> None:
    """Delete a workspace group and the repository permissions it granted."""
    ws = sim.workspace
    if ws.groups.pop(slug, None) is None:
        raise not_found(f"Group {slug} not found")
    for repo in ws.repositories.values():
        repo.group_permissions.pop(slug, None)


def remove_member(sim: Simulator, key: str) -> Account:
    """Remove a member from the workspace, its groups and repository permissions.

    The account stays known so old pull requests still name their author.
    """
    ws = sim.workspace
    account = ws.find_account(key)
    if account is None or account.account_id not in ws.member_ids:
        raise not_found(f"Member {key} not found")
    ws.member_ids.remove(account.account_id)
    for group in ws.groups.values():
        if account.account_id in group.member_ids:
            group.member_ids.remove(account.account_id)
    for repo in ws.repositories.values():
        repo.user_permissions.pop(account.account_id, None)
    return account
