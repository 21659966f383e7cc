"""Accounts, API keys and dashboard sessions.

``POST /api/v1/accounts`` registers (public, rate-limited per client) and returns the first API
key once. ``GET|PATCH /api/v1/account`` read and change the caller's account (a plan the
account already exceeds is 409). ``/api/v1/account/keys`` lists, creates (key shown once) and
revokes API keys. ``/api/v1/session`` is the dashboard login: ``POST`` sets the ``oc_session``
cookie and returns the CSRF token, ``GET`` returns it again, ``DELETE`` logs out. The
saved-monitoring consent in ``PATCH /api/v1/account`` is ``server.api.rights``'s (as are
``DELETE /api/v1/account`` and the export).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from aiohttp import web
from pydantic import StringConstraints

from server.api.auth import (
    SESSION_COOKIE,
    client_key,
    require_account,
    require_session,
)
from server.api.bodies import Body, Email, Label, Password, Text, read_json
from server.api.rights import (
    ACCOUNT_WITH_SAVED,
    ConsentPatch,
    change_account,
    consent_change,
    saved_json,
)
from server.api.schemas import (
    API_KEY,
    ID_PARAMETER,
    PUBLIC,
    obj,
    operation,
)
from server.errors import NotFound, Unauthorized, Unprocessable
from server.keys import CLOCK, LIMITER, SETTINGS, STORE
from server.plans import DEFAULT_PLAN
from server.ratelimit import Rate
from server.security import (
    csrf_token_for,
    hash_password_async,
    new_api_key,
    new_session_id,
    secret_digest,
    verify_password_async,
)
from server.storage.rights import Consent
from server.storage.store import KEEP, Account, ApiKey, Keep

routes = web.RouteTableDef()

REGISTRATIONS: Final = Rate(per_second=5 / 60, burst=10)
"""Registrations per client: 10 at once, then 5 a minute."""
LOGINS: Final = Rate(per_second=10 / 60, burst=20)
"""Login attempts per client (every attempt: each costs a password hash)."""
LOGIN_FAILURES: Final = Rate(per_second=5 / 60, burst=10)
"""Failed logins per e-mail address (its digest is the key, in memory only)."""

PlanName = Literal["free", "pro", "business"]
ID_CHARS: Final = 32


class Registration(Body):
    name: Text
    email: Email
    company: Text | None = None
    password: Password
    plan: PlanName = DEFAULT_PLAN


class AccountPatch(ConsentPatch):
    name: Text | None = None
    company: Text | None = None
    plan: PlanName | None = None


class KeyCreate(Body):
    name: Label


class Login(Body):
    email: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


def account_json(account: Account, consent: Consent | None = None) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "email": account.email,
        "company": account.company,
        "plan": account.plan,
        "limits": account.plan_limits.limits(),
        "saved_monitoring": consent is not None,
        "saved": saved_json(consent, account),
        "created_at": account.created_at,
    }


async def account_body(request: web.Request, account: Account) -> dict[str, Any]:
    return account_json(account, await request.app[STORE].consent(account.id))


def key_json(key: ApiKey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "created_at": key.created_at}


def _limit(request: web.Request, scope: str, key: str, rate: Rate) -> None:
    request.app[LIMITER].check(scope, key, rate=rate.per_second, burst=rate.burst)


def path_id(request: web.Request) -> str:
    """The ``{id}`` of the route; anything but one of our ids is simply not found."""
    value = request.match_info["id"]
    if len(value) != ID_CHARS or not all(c in "0123456789abcdef" for c in value):
        raise NotFound("no such object")
    return value


# -- registration and the caller's account ---------------------------------------------------
@routes.post("/api/v1/accounts")
async def register(request: web.Request) -> web.Response:
    _limit(request, "register", client_key(request), REGISTRATIONS)
    body = await read_json(request, Registration)
    password_hash = await hash_password_async(body.password)
    key = new_api_key()
    account, record = await request.app[STORE].create_account(
        name=body.name,
        email=body.email,
        company=body.company,
        password_hash=password_hash,
        plan=body.plan,
        api_key=key,
        key_name="default",
        now=request.app[CLOCK].time(),
    )
    return web.json_response(
        {"account": account_json(account), "api_key": key, "key": key_json(record)}, status=201
    )


@routes.get("/api/v1/account")
async def get_account(request: web.Request) -> web.Response:
    principal = await require_account(request)
    return web.json_response({"account": await account_body(request, principal.account)})


@routes.patch("/api/v1/account")
async def patch_account(request: web.Request) -> web.Response:
    principal = await require_account(request)
    body = await read_json(request, AccountPatch)
    given = body.model_fields_set
    for field in ("name", "plan"):
        if field in given and getattr(body, field) is None:
            raise Unprocessable(f"{field}: may not be null", field=field)
    company: str | Keep | None = body.company if "company" in given else KEEP
    store = request.app[STORE]
    account, consent = await change_account(
        request,
        principal,
        plan=body.plan,
        change=consent_change(body),
        update=lambda: store.update_account(
            principal.account_id, name=body.name, company=company, plan=body.plan
        ),
    )
    return web.json_response({"account": account_json(account, consent)})


# -- API keys ---------------------------------------------------------------------------------
@routes.post("/api/v1/account/keys")
async def create_key(request: web.Request) -> web.Response:
    principal = await require_account(request)
    body = await read_json(request, KeyCreate)
    key = new_api_key()
    record = await request.app[STORE].create_api_key(
        principal.account_id, name=body.name, key=key, now=request.app[CLOCK].time()
    )
    return web.json_response({"key": key_json(record), "api_key": key}, status=201)


@routes.get("/api/v1/account/keys")
async def list_keys(request: web.Request) -> web.Response:
    principal = await require_account(request)
    keys = await request.app[STORE].api_keys(principal.account_id)
    return web.json_response({"keys": [key_json(key) for key in keys]})


@routes.delete("/api/v1/account/keys/{id}")
async def delete_key(request: web.Request) -> web.Response:
    principal = await require_account(request)
    key_id = path_id(request)
    if not await request.app[STORE].delete_api_key(principal.account_id, key_id):
        raise NotFound("no such API key")
    return web.Response(status=204)


# -- dashboard sessions -----------------------------------------------------------------------
@routes.post("/api/v1/session")
async def login(request: web.Request) -> web.Response:
    limiter = request.app[LIMITER]
    _limit(request, "login", client_key(request), LOGINS)
    body = await read_json(request, Login)
    email_key = secret_digest(body.email.strip().lower())
    rate = LOGIN_FAILURES
    limiter.ensure("login-email", email_key, rate=rate.per_second, burst=rate.burst)
    store = request.app[STORE]
    record = await store.login_record(body.email)
    ok = await verify_password_async(body.password, record[1] if record else None)
    if record is None or not ok:
        limiter.spend("login-email", email_key, rate=rate.per_second, burst=rate.burst)
        raise Unauthorized("wrong e-mail address or password")
    account = record[0]
    settings = request.app[SETTINGS]
    lifetime = settings.session_hours * 3600
    now = request.app[CLOCK].time()
    session_id = new_session_id()
    await store.create_session(account.id, session_id, now=now, expires_at=now + lifetime)
    response = web.json_response(
        {
            "account": await account_body(request, account),
            "csrf_token": csrf_token_for(session_id),
            "expires_at": now + lifetime,
        }
    )
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(lifetime),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=settings.base_url().startswith("https://"),
    )
    return response


@routes.get("/api/v1/session")
async def get_session(request: web.Request) -> web.Response:
    principal = await require_session(request)
    session_id = request.cookies[SESSION_COOKIE]
    return web.json_response(
        {
            "account": await account_body(request, principal.account),
            "csrf_token": csrf_token_for(session_id),
        }
    )


@routes.delete("/api/v1/session")
async def logout(request: web.Request) -> web.Response:
    await require_session(request)
    await request.app[STORE].delete_session(request.cookies[SESSION_COOKIE])
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# -- OpenAPI ----------------------------------------------------------------------------------
_TAG = "accounts"
_ACCOUNT_BODY = obj(account=ACCOUNT_WITH_SAVED)
_SESSION_BODY = obj(account=ACCOUNT_WITH_SAVED, csrf_token={"type": "string"})
_NEW_KEY = obj(key=API_KEY, api_key={"type": "string", "description": "shown once"})

OPENAPI: dict[str, dict[str, Any]] = {
    "/api/v1/accounts": {
        "post": operation(
            "Register an account; returns its first API key (shown once)",
            "createAccount",
            ok=(
                201,
                "created",
                obj(account=ACCOUNT_WITH_SAVED, api_key={"type": "string"}, key=API_KEY),
            ),
            errors=(400, 409, 413, 422, 429),
            body=Registration,
            security=PUBLIC,
            tag=_TAG,
        )
    },
    "/api/v1/account": {
        "get": operation(
            "The caller's account, plan and limits",
            "getAccount",
            ok=(200, "the account", _ACCOUNT_BODY),
            errors=(401, 429),
            tag=_TAG,
        ),
        "patch": operation(
            "Change name, company or plan (a plan the account exceeds is 409), or turn saved "
            "monitoring on (saved_nodes: which nodes, null = all; 403 on a plan without it) "
            "or off (keep_saved_data: false deletes what was saved)",
            "updateAccount",
            ok=(200, "the changed account", _ACCOUNT_BODY),
            errors=(400, 401, 403, 409, 413, 422, 429),
            body=AccountPatch,
            tag=_TAG,
        ),
    },
    "/api/v1/account/keys": {
        "get": operation(
            "List API keys (prefixes only)",
            "listApiKeys",
            ok=(200, "the keys", obj(keys={"type": "array", "items": API_KEY})),
            errors=(401, 429),
            tag=_TAG,
        ),
        "post": operation(
            "Create an API key (shown once)",
            "createApiKey",
            ok=(201, "created", _NEW_KEY),
            errors=(400, 401, 403, 409, 413, 422, 429),
            body=KeyCreate,
            tag=_TAG,
        ),
    },
    "/api/v1/account/keys/{id}": {
        "parameters": [ID_PARAMETER],
        "delete": operation(
            "Revoke an API key",
            "deleteApiKey",
            ok=(204, "revoked", None),
            errors=(401, 403, 404, 429),
            tag=_TAG,
        ),
    },
    "/api/v1/session": {
        "post": operation(
            "Dashboard login: sets the oc_session cookie, returns the CSRF token",
            "login",
            ok=(200, "logged in", _SESSION_BODY),
            errors=(400, 401, 413, 422, 429),
            body=Login,
            security=PUBLIC,
            tag=_TAG,
        ),
        "get": operation(
            "The current dashboard session and its CSRF token",
            "getSession",
            ok=(200, "the session", _SESSION_BODY),
            errors=(401, 429),
            security=[{"session": []}],
            tag=_TAG,
        ),
        "delete": operation(
            "Log out (needs X-CSRF-Token)",
            "logout",
            ok=(204, "logged out, cookie cleared", None),
            errors=(401, 403, 429),
            security=[{"session": []}],
            tag=_TAG,
        ),
    },
}
