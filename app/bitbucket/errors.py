"""Errors of the Bitbucket layer, by what a caller should do about them.

`RetryLater` and its subclasses mean "try again in `retry_after` seconds": tasks turn them into
a Celery retry with that countdown instead of sleeping. A `BitbucketRequestError` (a 4xx) is the
request's fault and is not retried.
"""

from __future__ import annotations


class BitbucketError(Exception):
    """Base of every error raised while talking to Bitbucket."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class RetryLater(BitbucketError):
    """Nothing is wrong with the request; it can succeed later."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        endpoint: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.retry_after = retry_after


class BudgetExhausted(RetryLater):
    """The shared budget has no call left for this priority until `retry_after` seconds pass."""


class BudgetPaused(RetryLater):
    """Bitbucket answered 429 to some process; every process waits until the pause ends."""


class BudgetUnavailable(RetryLater):
    """Redis, which holds the shared budget, did not answer: no call may go out uncounted."""


class RateLimited(RetryLater):
    """This call got HTTP 429; the shared budget is now paused."""


class BitbucketUnavailable(RetryLater):
    """Connection errors or 5xx answers persisted through the client's own retries."""


class NoAnswer(BitbucketUnavailable):
    """A call that changes something was sent once and got no answer in time: Bitbucket may
    have done it. Never repeated automatically; the caller tells its user to check."""


class BitbucketRequestError(BitbucketError):
    """A 4xx answer: retrying the same request will not help."""


class CredentialError(BitbucketRequestError):
    """401/403: the credential is wrong, expired, or lacks a scope for this endpoint."""


class NotFound(BitbucketRequestError):
    """404: the workspace, repository, file or object does not exist (or is hidden from us)."""


class ForeignHostError(BitbucketError):
    """A URL outside the configured Bitbucket API was about to be called; refused."""
