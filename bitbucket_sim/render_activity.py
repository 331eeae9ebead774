"""JSON shapes of pull requests, pipelines, commit statuses, hooks and people."""

from __future__ import annotations

from bitbucket_sim.ids import iso
from bitbucket_sim.model import (
    CommitStatus,
    Group,
    Hook,
    Participant,
    Pipeline,
    PullRequest,
    Repository,
    Workspace,
)
from bitbucket_sim.render import (
    HTML,
    Json,
    account_json,
    commit_ref_json,
    enc,
    href,
    repo_api,
    repository_ref_json,
    workspace_ref_json,
)


def _account_or_none(base: str, ws: Workspace, account_id: str | None) -> Json | None:
    if account_id is None:
        return None
    account = ws.accounts.get(account_id)
    return None if account is None else account_json(base, account)


def participant_json(base: str, ws: Workspace, participant: Participant) -> Json:
    return {
        "type": "participant",
        "user": _account_or_none(base, ws, participant.account_id),
        "role": participant.role,
        "approved": participant.approved,
        "state": participant.state,
        "participated_on": (
            iso(participant.participated_on) if participant.participated_on else None
        ),
    }


def pullrequest_json(
    base: str, ws: Workspace, repo: Repository, pr: PullRequest, detailed: bool = True
) -> Json:
    """A pull request; `detailed` adds reviewers and participants (single-PR endpoint, hooks)."""
    api = f"{repo_api(base, ws, repo)}/pullrequests/{pr.id}"
    repo_ref = repository_ref_json(base, ws, repo)
    doc: Json = {
        "type": "pullrequest",
        "id": pr.id,
        "title": pr.title,
        "description": pr.description,
        "summary": {"type": "rendered", "raw": pr.description, "markup": "markdown"},
        "state": pr.state,
        "author": _account_or_none(base, ws, pr.author_id),
        "source": {
            "branch": {"name": pr.source_branch},
            "commit": commit_ref_json(base, ws, repo, pr.source_commit, short=True),
            "repository": repo_ref,
        },
        "destination": {
            "branch": {"name": pr.destination_branch},
            "commit": commit_ref_json(base, ws, repo, pr.destination_commit, short=True),
            "repository": repo_ref,
        },
        "merge_commit": (
            commit_ref_json(base, ws, repo, pr.merge_commit, short=True)
            if pr.merge_commit
            else None
        ),
        "closed_by": _account_or_none(base, ws, pr.closed_by_id),
        "close_source_branch": pr.close_source_branch,
        "reason": pr.reason,
        "comment_count": pr.comment_count,
        "task_count": pr.task_count,
        "created_on": iso(pr.created_on),
        "updated_on": iso(pr.updated_on),
        "links": {
            "self": href(api),
            "html": href(f"{HTML}/{ws.slug}/{repo.slug}/pull-requests/{pr.id}"),
            "commits": href(f"{api}/commits"),
            "approve": href(f"{api}/approve"),
            "diff": href(f"{api}/diff"),
            "diffstat": href(f"{api}/diffstat"),
            "comments": href(f"{api}/comments"),
            "activity": href(f"{api}/activity"),
            "merge": href(f"{api}/merge"),
            "decline": href(f"{api}/decline"),
            "statuses": href(f"{api}/statuses"),
        },
    }
    if detailed:
        doc["reviewers"] = [
            account_json(base, ws.accounts[account_id])
            for account_id in pr.reviewer_ids
            if account_id in ws.accounts
        ]
        doc["participants"] = [participant_json(base, ws, p) for p in pr.participants]
    return doc


def _pipeline_state(pipeline: Pipeline) -> Json:
    if pipeline.state == "PENDING":
        return {"type": "pipeline_state_pending", "name": "PENDING"}
    if pipeline.state == "IN_PROGRESS":
        return {
            "type": "pipeline_state_in_progress",
            "name": "IN_PROGRESS",
            "stage": {"type": "pipeline_state_in_progress_running", "name": "RUNNING"},
        }
    result = pipeline.result or "SUCCESSFUL"
    return {
        "type": "pipeline_state_completed",
        "name": "COMPLETED",
        "result": {"type": f"pipeline_state_completed_{result.lower()}", "name": result},
    }


def pipeline_json(base: str, ws: Workspace, repo: Repository, pipeline: Pipeline) -> Json:
    """A pipeline as the pipelines endpoints answer it."""
    api = f"{repo_api(base, ws, repo)}/pipelines/{enc(pipeline.uuid)}"
    return {
        "type": "pipeline",
        "uuid": pipeline.uuid,
        "build_number": pipeline.build_number,
        "creator": _account_or_none(base, ws, pipeline.creator_id),
        "repository": repository_ref_json(base, ws, repo),
        "target": {
            "type": "pipeline_ref_target",
            "ref_type": pipeline.ref_type,
            "ref_name": pipeline.ref_name,
            "commit": {"type": "commit", "hash": pipeline.commit},
            "selector": {"type": "branches", "pattern": pipeline.ref_name},
        },
        "trigger": {
            "name": pipeline.trigger,
            "type": f"pipeline_trigger_{pipeline.trigger.lower()}",
        },
        "state": _pipeline_state(pipeline),
        "created_on": iso(pipeline.created_on),
        "completed_on": iso(pipeline.completed_on) if pipeline.completed_on else None,
        "run_number": 1,
        "duration_in_seconds": pipeline.duration_in_seconds,
        "build_seconds_used": pipeline.duration_in_seconds,
        "first_successful": False,
        "expired": pipeline.result == "EXPIRED",
        "links": {
            "self": href(api),
            "steps": href(f"{api}/steps/"),
            "html": href(f"{HTML}/{ws.slug}/{repo.slug}/pipelines/results/{pipeline.build_number}"),
        },
    }


def status_json(base: str, ws: Workspace, repo: Repository, status: CommitStatus) -> Json:
    """A commit status (`type: build`); `url` points at the external CI system."""
    commit_api = f"{repo_api(base, ws, repo)}/commit/{status.commit}"
    return {
        "type": "build",
        "uuid": status.uuid,
        "key": status.key,
        "state": status.state,
        "name": status.name,
        "description": status.description,
        "refname": status.refname,
        "url": status.url,
        "created_on": iso(status.created_on),
        "updated_on": iso(status.updated_on),
        "commit": {"type": "commit", "hash": status.commit, "links": {"self": href(commit_api)}},
        "repository": repository_ref_json(base, ws, repo),
        "links": {
            "self": href(f"{commit_api}/statuses/build/{enc(status.key)}"),
            "commit": href(commit_api),
        },
    }


def hook_json(base: str, ws: Workspace, hook: Hook) -> Json:
    """A webhook subscription; the secret itself is never shown."""
    repo = None
    if hook.repository_uuid is not None:
        repo = next((r for r in ws.repositories.values() if r.uuid == hook.repository_uuid), None)
    if repo is not None:
        subject, subject_type = repository_ref_json(base, ws, repo), "repository"
        self_url = f"{repo_api(base, ws, repo)}/hooks/{enc(hook.uuid)}"
    else:
        subject, subject_type = workspace_ref_json(base, ws), "workspace"
        self_url = f"{base}/2.0/workspaces/{ws.slug}/hooks/{enc(hook.uuid)}"
    return {
        "type": "webhook_subscription",
        "uuid": hook.uuid,
        "url": hook.url,
        "description": hook.description,
        "subject_type": subject_type,
        "subject": subject,
        "active": hook.active,
        "created_at": iso(hook.created_at),
        "events": sorted(hook.events),
        "secret_set": hook.secret is not None,
        "skip_cert_verification": False,
        "links": {"self": href(self_url)},
    }


def membership_json(base: str, ws: Workspace, account_id: str) -> Json:
    """A `workspace_membership`."""
    return {
        "type": "workspace_membership",
        "user": account_json(base, ws.accounts[account_id]),
        "workspace": workspace_ref_json(base, ws),
        "links": {
            "self": href(f"{base}/2.0/workspaces/{ws.slug}/members/{enc(account_id)}"),
        },
    }


def workspace_permission_json(base: str, ws: Workspace, account_id: str) -> Json:
    """A membership with its workspace permission (owner / collaborator / member)."""
    doc = membership_json(base, ws, account_id)
    admins = ws.groups.get("administrators")
    is_owner = account_id == ws.member_ids[0] or (admins and account_id in admins.member_ids)
    doc["permission"] = "owner" if is_owner else "member"
    return doc


def repository_permission_json(
    base: str, ws: Workspace, repo: Repository, account_id: str, permission: str
) -> Json:
    return {
        "type": "repository_permission",
        "permission": permission,
        "user": account_json(base, ws.accounts[account_id]),
        "repository": repository_ref_json(base, ws, repo),
    }


def repository_user_permission_json(
    base: str, ws: Workspace, repo: Repository, account_id: str, permission: str
) -> Json:
    api = repo_api(base, ws, repo)
    return {
        "type": "repository_user_permission",
        "permission": permission,
        "user": account_json(base, ws.accounts[account_id]),
        "links": {"self": href(f"{api}/permissions-config/users/{enc(account_id)}")},
    }


def group_ref_json(base: str, ws: Workspace, group: Group) -> Json:
    return {
        "type": "group",
        "slug": group.slug,
        "name": group.name,
        "full_slug": f"{ws.slug}:{group.slug}",
        "workspace": workspace_ref_json(base, ws),
        "links": {"html": href(f"{HTML}/{ws.slug}/workspace/settings/groups/{group.slug}")},
    }


def repository_group_permission_json(
    base: str, ws: Workspace, repo: Repository, group: Group, permission: str
) -> Json:
    api = repo_api(base, ws, repo)
    return {
        "type": "repository_group_permission",
        "permission": permission,
        "group": group_ref_json(base, ws, group),
        "repository": repository_ref_json(base, ws, repo),
        "links": {"self": href(f"{api}/permissions-config/groups/{group.slug}")},
    }


def group_v1_json(base: str, ws: Workspace, group: Group) -> Json:
    """A group as the 1.0 groups API lists it, members included."""
    members = []
    for account_id in group.member_ids:
        account = ws.accounts[account_id]
        member = account_json(base, account)
        member.pop("type")
        member["is_team"] = False
        members.append(member)
    return {
        "name": group.name,
        "slug": group.slug,
        "permission": group.permission,
        "auto_add": False,
        "email_forwarding_disabled": False,
        "owner": {"display_name": ws.name, "uuid": ws.uuid, "username": ws.slug, "is_team": True},
        "members": members,
    }
