"""Data Center error answers: `{"errors": [{"context", "message", "exceptionName"}]}`."""

from __future__ import annotations

from typing import Any

from bitbucket_sim.errors import SimError

EXC = "com.atlassian.bitbucket."
NO_PROJECT = EXC + "project.NoSuchProjectException"
NO_REPOSITORY = EXC + "repository.NoSuchRepositoryException"
NO_PATH = EXC + "content.NoSuchPathException"
NO_COMMIT = EXC + "commit.NoSuchCommitException"
NO_PULL_REQUEST = EXC + "pull.NoSuchPullRequestException"
NO_USER = EXC + "user.NoSuchUserException"
NO_WEBHOOK = "com.atlassian.webhooks.NoSuchWebhookException"
NOT_PERMITTED = EXC + "AuthorisationException"
BAD_CREDENTIALS = EXC + "auth.IncorrectPasswordAuthenticationException"
VALIDATION = "com.atlassian.bitbucket.validation.ArgumentValidationException"


class DcError(SimError):
    """An error rendered in Data Center's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        exception_name: str | None = None,
        context: str | None = None,
    ) -> None:
        super().__init__(status, message)
        self.exception_name = exception_name
        self.context = context

    def body(self) -> dict[str, Any]:
        return {
            "errors": [
                {
                    "context": self.context,
                    "message": self.message,
                    "exceptionName": self.exception_name,
                }
            ]
        }


def dc_not_found(message: str, exception_name: str | None = None) -> DcError:
    return DcError(404, message, exception_name)


def dc_bad_request(message: str, context: str | None = None) -> DcError:
    return DcError(400, message, VALIDATION if context else None, context)
