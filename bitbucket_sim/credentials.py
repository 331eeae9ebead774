"""Who is calling: access tokens, API tokens (Basic email:token) and OAuth client credentials.

With no credential configured every caller is accepted (and still gets its own rate-limit
bucket, taken from whatever it sent). With credentials configured, only those pass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bitbucket_sim.config import SimConfig

OAUTH_SCOPES = "account repository pullrequest pipeline webhook project team"


@dataclass(frozen=True)
class Caller:
    """An accepted caller; `bucket` keys its rate-limit windows."""

    bucket: str
    scheme: str  # bearer | basic | anonymous

    @property
    def uses_bearer(self) -> bool:
        return self.scheme == "bearer"


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    client_id: str
    expires_at: float
    expires_in: int


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def decode_basic(header: str) -> tuple[str, str] | None:
    """`(user, password)` from a `Basic ...` header value, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Gatekeeper:
    """Checks credentials and issues OAuth access tokens."""

    def __init__(self, config: SimConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._issued: dict[str, IssuedToken] = {}

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller behind an `Authorization` header, or None when it must get a 401."""
        config = self._config
        header = (authorization or "").strip()
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return self._bearer(value)
        basic = decode_basic(header) if scheme.lower() == "basic" else None
        if basic is not None:
            email, token = basic
            if not config.credentials_required:
                return Caller(f"user:{email}", "basic")
            if _same(email, config.email) and _same(token, config.api_token):
                return Caller(f"user:{email}", "basic")
            return None
        return None if config.credentials_required else Caller("anonymous", "anonymous")

    def _bearer(self, token: str) -> Caller | None:
        issued = self._valid_issued(token)
        if issued is not None:
            return Caller(f"oauth:{issued.client_id}", "bearer")
        if _same(token, self._config.access_token):
            return Caller("token:access-token", "bearer")
        if not self._config.credentials_required:
            return Caller(f"token:{_fingerprint(token)}", "bearer")
        return None

    def _valid_issued(self, token: str) -> IssuedToken | None:
        with self._lock:
            issued = self._issued.get(token)
            if issued is None:
                return None
            if issued.expires_at <= self._clock():
                del self._issued[token]
                return None
            return issued

    def client_accepted(self, client_id: str, client_secret: str) -> bool:
        """Whether an OAuth consumer may get a token."""
        config = self._config
        if config.oauth_client_id is None:
            return not config.credentials_required
        return _same(client_id, config.oauth_client_id) and _same(
            client_secret, config.oauth_client_secret
        )

    def issue(self, client_id: str) -> IssuedToken:
        """A new bearer token for `client_id`, valid for `oauth_expires_in` seconds."""
        lifetime = self._config.oauth_expires_in
        token = IssuedToken(
            access_token=secrets.token_urlsafe(32),
            client_id=client_id,
            expires_at=self._clock() + lifetime,
            expires_in=lifetime,
        )
        with self._lock:
            self._issued[token.access_token] = token
        return token
