"""A local JWKS endpoint and Backstage-shaped user tokens signed against it, for the actions
bbsync takes on a Backstage user's behalf."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

# What a Backstage backend at http://backstage.test puts in its user tokens.
ISSUER = "http://backstage.test/api/auth"
AUDIENCE = "backstage"


class _Jwks(BaseHTTPRequestHandler):
    document: bytes = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *_: Any) -> None:
        return


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextmanager
def jwks_server() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    """`(JWKS URL, private key)`: a real HTTP server publishing the key's public half."""
    key = new_key()
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    _Jwks.document = json.dumps(
        {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}
    ).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/auth/.well-known/jwks.json", key
    finally:
        server.shutdown()
        server.server_close()


def user_token(key: Any, sub: str, **claims: Any) -> str:
    """A Backstage user token for entity ref `sub`; `claims` override the defaults (None
    leaves a claim out)."""
    now = int(time.time())
    body = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    present = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(present, key, algorithm="RS256", headers={"kid": "k1"})
