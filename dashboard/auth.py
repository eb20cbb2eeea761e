"""Optional login for the dashboard: HTTP basic auth on every request, off unless both variables are set.

    ARB_DASHBOARD_USER=ops ARB_DASHBOARD_PASSWORD=... arb dashboard

Basic auth sends the password with every request: behind anything but 127.0.0.1, put TLS in front (a reverse proxy).
The password is kept only as a SHA-256 digest and compared in constant time; it is never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Mapping

from arb.settings import ConfigError

USER_VAR = "ARB_DASHBOARD_USER"
PASSWORD_VAR = "ARB_DASHBOARD_PASSWORD"
REALM = "arb dashboard"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@dataclass(frozen=True)
class Credentials:
    user: str
    password_sha256: bytes = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Credentials | None":
        """The login from the environment, or None (no login) when neither variable is set."""
        env = os.environ if environ is None else environ
        user, password = env.get(USER_VAR) or "", env.get(PASSWORD_VAR) or ""
        if not user and not password:
            return None
        if not user or not password:
            raise ConfigError(f"set both {USER_VAR} and {PASSWORD_VAR} for the dashboard login, or neither")
        if ":" in user:
            raise ConfigError(f"{USER_VAR} must not contain ':' (HTTP basic auth)")
        return cls(user, _digest(password))

    def check(self, authorization: str | None) -> bool:
        """True when an `Authorization: Basic ...` header carries this user and password."""
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user_ok = hmac.compare_digest(_digest(user), _digest(self.user))
        password_ok = hmac.compare_digest(_digest(password), self.password_sha256)
        return bool(sep) and user_ok and password_ok


def protect(server, credentials: Credentials | None) -> None:
    """Require `credentials` on every request to the Flask `server` (pages, callbacks, assets); None does nothing."""
    if credentials is None:
        return
    from flask import Response, request

    def require_login():
        if not credentials.check(request.headers.get("Authorization")):
            return Response("login required\n", 401, {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
        return None

    server.before_request(require_login)
