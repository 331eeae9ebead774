"""Token rotation reminders: warn from day 80, alert from day 90 after a token was made."""

from __future__ import annotations

from datetime import date

from app.config import CredentialKind, Settings

WARN_DAYS = 80
ALERT_DAYS = 90


def token_age_notice(settings: Settings, today: date | None = None) -> tuple[str, str] | None:
    """`(level, message)` when the token is due for rotation (level `warning` or `alert`)."""
    created = settings.token_created_on
    if created is None or settings.credential.kind in (
        CredentialKind.ANONYMOUS,
        CredentialKind.OAUTH,  # OAuth access tokens are renewed every two hours
    ):
        return None
    age = ((today or date.today()) - created).days
    if age >= ALERT_DAYS:
        return "alert", (
            f"Bitbucket token is {age} days old: rotate it now and update BITBUCKET_TOKEN_CREATED"
        )
    if age >= WARN_DAYS:
        return "warning", (f"Bitbucket token is {age} days old: rotate it before day {ALERT_DAYS}")
    return None
