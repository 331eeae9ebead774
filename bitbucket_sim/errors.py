"""The one error type of the simulator: becomes a Bitbucket-shaped JSON error answer."""

from __future__ import annotations

from typing import Any


class SimError(Exception):
    """An error with its HTTP status; rendered as `{"type": "error", "error": {...}}`."""

    def __init__(self, status: int, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message}
        if self.detail:
            error["detail"] = self.detail
        return {"type": "error", "error": error}


def bad_request(message: str, detail: str | None = None) -> SimError:
    return SimError(400, message, detail)


def not_found(message: str) -> SimError:
    return SimError(404, message)
