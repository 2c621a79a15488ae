"""Who may do what: bearer tokens, read-only and admin.

Without a read token, reads are open (the server then listens on loopback only, see `Settings.check`); writes
always need the admin token, and a server started without one refuses every write. The admin token reads too.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from server.errors import ApiError
from server.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="A read token, or the admin token for adds and deletes.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _matches(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def _given(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else None


def require_read(request: Request, credentials: Credentials) -> None:
    settings: Settings = request.app.state.settings
    if settings.token is None:
        return
    token = _given(credentials)
    if token is None:
        raise ApiError(401, "this server needs a token: send `Authorization: Bearer TOKEN`", _CHALLENGE)
    if not (_matches(token, settings.token) or _matches(token, settings.admin_token)):
        raise ApiError(401, "wrong token", _CHALLENGE)


def require_admin(request: Request, credentials: Credentials) -> None:
    settings: Settings = request.app.state.settings
    if settings.admin_token is None:
        raise ApiError(403, "this server takes no writes: start it with an admin token (--admin-token) to allow them")
    token = _given(credentials)
    if token is None:
        raise ApiError(401, "writing needs the admin token: send `Authorization: Bearer TOKEN`", _CHALLENGE)
    if _matches(token, settings.admin_token):
        return
    if _matches(token, settings.token):
        raise ApiError(403, "a read token cannot write: use the admin token")
    raise ApiError(401, "wrong token", _CHALLENGE)
