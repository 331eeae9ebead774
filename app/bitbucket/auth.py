"""How requests to Bitbucket are authorised, per credential kind.

- Access token (repository/project/workspace): `Authorization: Bearer <token>`.
- Atlassian API token: HTTP Basic with the account email and the token.
- OAuth consumer (client credentials): a 2-hour access token from the token URL, cached in
  Redis so every process shares one token, renewed before it expires. Since 2026-05 Bitbucket
  returns no refresh token, so renewing means asking again.
"""

from __future__ import annotations

import base64
import logging

import redis
import requests
from redis.lock import Lock

from app.bitbucket.budget import KEY_PREFIX, shared_state
from app.bitbucket.errors import BitbucketUnavailable, CredentialError, RetryLater
from app.config import Credential, CredentialKind

log = logging.getLogger(__name__)

# How long a process waits for another one's renewal before its task retries later.
RENEWAL_WAIT_SECONDS = 5.0
# Renew this long before Bitbucket says the token expires, so no call carries a dying token.
RENEW_MARGIN_SECONDS = 300


class TokenSource:
    """Produces the `Authorization` header value for one credential."""

    def __init__(
        self,
        credential: Credential,
        redis_client: redis.Redis | None = None,
        http: requests.Session | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.credential = credential
        self._redis = redis_client
        self._http = http or requests.Session()
        self._timeout = timeout
        self._cache_key = f"{KEY_PREFIX}:oauth-token/{credential.fingerprint}"
        if credential.kind is CredentialKind.OAUTH and redis_client is None:
            raise ValueError("OAuth client credentials need Redis to share the token")

    def authorization(self) -> str | None:
        """The header value, or None for anonymous access."""
        kind = self.credential.kind
        if kind is CredentialKind.ACCESS_TOKEN:
            return f"Bearer {self.credential.secret.reveal()}"
        if kind is CredentialKind.API_TOKEN:
            pair = f"{self.credential.identity}:{self.credential.secret.reveal()}"
            return "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        if kind is CredentialKind.OAUTH:
            return f"Bearer {self._oauth_token()}"
        return None

    def invalidate(self) -> None:
        """Forget a cached OAuth token that Bitbucket refused, so the next call asks anew."""
        if self._redis is not None and self.credential.kind is CredentialKind.OAUTH:
            with shared_state("OAuth token cache"):
                self._redis.delete(self._cache_key)

    def _oauth_token(self) -> str:
        assert self._redis is not None
        with shared_state("OAuth token cache"):
            cached = self._redis.get(self._cache_key)
            if cached:
                return cached.decode() if isinstance(cached, bytes) else str(cached)
            # One process asks; the others wait briefly for its answer, then retry later
            # (a task never holds its worker for the whole renewal).
            lock = self._redis.lock(
                f"{self._cache_key}:lock", timeout=60, blocking_timeout=RENEWAL_WAIT_SECONDS
            )
            if not lock.acquire():
                raise RetryLater(
                    "OAuth token being renewed by another process",
                    endpoint="oauth",
                    retry_after=RENEWAL_WAIT_SECONDS,
                )
            try:
                cached = self._redis.get(self._cache_key)
                if cached:
                    return cached.decode() if isinstance(cached, bytes) else str(cached)
                token, expires_in = self._request_token()
                ttl = max(30, int(expires_in) - RENEW_MARGIN_SECONDS)
                self._redis.set(self._cache_key, token, ex=ttl)
            finally:
                _release(lock)
        log.info("oauth token obtained", extra={"expires_in": expires_in, "cached_for": ttl})
        return token

    def _request_token(self) -> tuple[str, float]:
        url = self.credential.token_url
        try:
            response = self._http.post(
                url,
                data={"grant_type": "client_credentials"},
                auth=(self.credential.identity, self.credential.secret.reveal()),
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise BitbucketUnavailable(
                f"OAuth token endpoint unreachable: {type(exc).__name__}",
                endpoint="oauth",
                retry_after=30,
            ) from None
        if response.status_code >= 500:
            raise BitbucketUnavailable(
                f"OAuth token endpoint answered {response.status_code}",
                endpoint="oauth",
                status=response.status_code,
                retry_after=30,
            )
        if response.status_code != 200:
            raise CredentialError(
                f"OAuth client credentials refused by the token endpoint "
                f"(HTTP {response.status_code}): check BITBUCKET_OAUTH_CLIENT_ID/SECRET",
                endpoint="oauth",
                status=response.status_code,
            )
        try:
            body = response.json()
            token = str(body["access_token"])
            expires_in = float(body.get("expires_in", 7200))
        except (ValueError, KeyError, TypeError):
            raise CredentialError(
                "OAuth token endpoint answered without an access_token", endpoint="oauth"
            ) from None
        return token, expires_in


def _release(lock: Lock) -> None:
    try:
        lock.release()
    except redis.RedisError:
        # Expired or Redis gone: the lock times out by itself, and a token already cached
        # stays valid, so there is nothing to undo.
        log.info("oauth renewal lock not released; it expires by itself")
