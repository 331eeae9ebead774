"""Data Center JSON shapes of pull requests, participants, build statuses and webhooks."""

from __future__ import annotations

from bitbucket_sim.datacenter.render import (
    Json,
    links,
    millis,
    repository_json,
    user_json,
)
from bitbucket_sim.datacenter.state import DcState
from bitbucket_sim.model import CommitStatus, Hook, Participant, PullRequest, Repository, Workspace

# Cloud's SUPERSEDED has no Data Center counterpart: such pull requests show as DECLINED.
PR_STATES = {"OPEN": "OPEN", "MERGED": "MERGED", "DECLINED": "DECLINED", "SUPERSEDED": "DECLINED"}
# Legacy /rest/build-status/1.0 knows SUCCESSFUL, FAILED and INPROGRESS only.
LEGACY_BUILD_STATES = {"STOPPED": "FAILED"}
BUILD_STATES = {"STOPPED": "CANCELLED"}


def participant_status(participant: Participant) -> str:
    if participant.approved:
        return "APPROVED"
    if participant.state == "changes_requested":
        return "NEEDS_WORK"
    return "UNAPPROVED"


def pr_state(pr: PullRequest) -> str:
    return PR_STATES.get(pr.state, "DECLINED")


def _participant_json(
    base: str, dc: DcState, ws: Workspace, pr: PullRequest, participant: Participant
) -> Json:
    doc: Json = {
        "user": user_json(base, dc, ws.accounts[participant.account_id]),
        "role": participant.role,
        "approved": participant.approved,
        "status": participant_status(participant),
    }
    if participant.participated_on is not None and participant.role == "REVIEWER":
        doc["lastReviewedCommit"] = pr.source_commit
    return doc


def pr_ref_json(
    base: str, dc: DcState, ws: Workspace, repo: Repository, branch: str, sha: str
) -> Json:
    return {
        "id": f"refs/heads/{branch}",
        "displayId": branch,
        "latestCommit": sha,
        "type": "BRANCH",
        "repository": repository_json(base, dc, ws, repo),
    }


def pullrequest_json(
    base: str, dc: DcState, ws: Workspace, repo: Repository, pr: PullRequest
) -> Json:
    state = pr_state(pr)
    author = ws.accounts[pr.author_id]
    doc: Json = {
        "id": pr.id,
        "version": 0,
        "title": pr.title,
        "description": pr.description,
        "state": state,
        "open": state == "OPEN",
        "closed": state != "OPEN",
        "createdDate": millis(pr.created_on),
        "updatedDate": millis(pr.updated_on),
    }
    if state != "OPEN":
        doc["closedDate"] = millis(pr.updated_on)
    doc.update(
        {
            "fromRef": pr_ref_json(base, dc, ws, repo, pr.source_branch, pr.source_commit),
            "toRef": pr_ref_json(base, dc, ws, repo, pr.destination_branch, pr.destination_commit),
            "locked": False,
            "author": {
                "user": user_json(base, dc, author),
                "role": "AUTHOR",
                "approved": False,
                "status": "UNAPPROVED",
            },
            "reviewers": [
                _participant_json(base, dc, ws, pr, p)
                for p in pr.participants
                if p.role == "REVIEWER"
            ],
            "participants": [
                _participant_json(base, dc, ws, pr, p)
                for p in pr.participants
                if p.role != "REVIEWER" and p.account_id != pr.author_id
            ],
            "properties": {
                "commentCount": pr.comment_count,
                "openTaskCount": pr.task_count,
                "resolvedTaskCount": 0,
            },
            "links": links(
                f"{base}/projects/{repo.project_key}/repos/{repo.slug}/pull-requests/{pr.id}"
            ),
        }
    )
    if pr.merge_commit:
        doc["properties"]["mergeCommit"] = {
            "id": pr.merge_commit,
            "displayId": pr.merge_commit[:11],
        }
    return doc


def legacy_build_json(status: CommitStatus) -> Json:
    """`/rest/build-status/1.0/commits/{hash}` entries."""
    return {
        "state": LEGACY_BUILD_STATES.get(status.state, status.state),
        "key": status.key,
        "name": status.name,
        "url": status.url,
        "description": status.description,
        "dateAdded": millis(status.updated_on),
    }


def build_json(status: CommitStatus) -> Json:
    """`/rest/api/latest/projects/{KEY}/repos/{slug}/commits/{hash}/builds` entries."""
    doc: Json = {
        "key": status.key,
        "state": BUILD_STATES.get(status.state, status.state),
        "name": status.name,
        "url": status.url,
        "description": status.description,
        "createdDate": millis(status.created_on),
        "updatedDate": millis(status.updated_on),
    }
    if status.refname:
        doc["ref"] = f"refs/heads/{status.refname}"
    return doc


def webhook_json(hook: Hook) -> Json:
    """A webhook; the secret is never shown back."""
    created = hook.created_at
    return {
        "id": int(hook.uuid),
        "name": hook.name,
        "createdDate": millis(created),
        "updatedDate": millis(hook.updated_at or created),
        "events": list(hook.events),
        "configuration": {},
        "url": hook.url,
        "active": hook.active,
        "scopeType": "repository" if hook.repository_uuid else "project",
        "sslVerificationRequired": True,
    }
