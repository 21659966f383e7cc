"""Request authentication: who is calling, for every account route.

    principal = await require_account(request)      # or raises 401 / 403 / 429

Two ways in:
- ``Authorization: Bearer oc_key_…`` — an API key (scripts, the CLI). No CSRF check: a browser
  never attaches it on its own.
- the dashboard's ``oc_session`` cookie (HttpOnly, SameSite=Strict) — then every unsafe method
  (POST, PATCH, PUT, DELETE) also needs ``X-CSRF-Token`` equal to the session's CSRF token
  (returned by ``POST /api/v1/session`` and ``GET /api/v1/session``); without it, 403.

A present ``Authorization`` header is the only credential looked at (no fallback to the cookie).
Every failure is the same 401 with the same message, whatever was wrong. Failed attempts are
rate-limited per client: the limiter key is the peer address, held in memory only, never logged
(behind a reverse proxy all clients share the proxy's address, so the limit is then per proxy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from aiohttp import web

from server.errors import Forbidden, Unauthorized
from server.keys import CLOCK, LIMITER, STORE
from server.ratelimit import Rate
from server.security import API_KEY_PREFIX, csrf_matches, plausible_secret
from server.storage.store import Account

SESSION_COOKIE: Final = "oc_session"
CSRF_HEADER: Final = "X-CSRF-Token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
AUTH_FAILURES: Final = Rate(per_second=0.5, burst=30)
"""Wrong keys or cookies per client: 30 at once, then one every 2 s."""
BAD_CREDENTIALS: Final = "missing or invalid credentials"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``credential_id`` is the API key's id, or the session's
    digest (what issue 5's consent record names as "by which key or session")."""

    account: Account
    via: Literal["api_key", "session"]
    credential_id: str

    @property
    def account_id(self) -> str:
        return self.account.id


def client_key(request: web.Request) -> str:
    """The rate-limit key of the caller: its peer address (memory only, never logged)."""
    return request.remote or "unknown"


def _limit_failures(request: web.Request) -> None:
    rate = AUTH_FAILURES
    request.app[LIMITER].ensure(
        "auth-failure", client_key(request), rate=rate.per_second, burst=rate.burst
    )


def _failed(request: web.Request) -> Unauthorized:
    rate = AUTH_FAILURES
    request.app[LIMITER].spend(
        "auth-failure", client_key(request), rate=rate.per_second, burst=rate.burst
    )
    return Unauthorized(BAD_CREDENTIALS)


async def _from_bearer(request: web.Request, header: str) -> Principal | None:
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not plausible_secret(token, API_KEY_PREFIX):
        return None
    found = await request.app[STORE].account_by_api_key(token)
    return Principal(found[0], "api_key", found[1]) if found else None


async def _from_session(request: web.Request, session_id: str) -> Principal | None:
    if not plausible_secret(session_id, ""):
        return None
    found = await request.app[STORE].session_account(session_id, request.app[CLOCK].time())
    return Principal(found[0], "session", found[1]) if found else None


def _check_csrf(request: web.Request, session_id: str) -> None:
    if request.method not in SAFE_METHODS and not csrf_matches(
        session_id, request.headers.get(CSRF_HEADER)
    ):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header for a cookie-authenticated write")


async def require_session(request: web.Request) -> Principal:
    """The caller's dashboard session (cookie only; CSRF-checked on unsafe methods)."""
    _limit_failures(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id is None:
        raise Unauthorized(BAD_CREDENTIALS)
    principal = await _from_session(request, session_id)
    if principal is None:
        raise _failed(request)
    _check_csrf(request, session_id)
    return principal


async def require_account(request: web.Request) -> Principal:
    """The authenticated caller: Bearer API key, or session cookie (+ CSRF on writes)."""
    header = request.headers.get("Authorization")
    if header is None:
        return await require_session(request)
    _limit_failures(request)
    principal = await _from_bearer(request, header)
    if principal is None:
        raise _failed(request)
    return principal
