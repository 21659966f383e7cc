"""Accounts, API keys and dashboard sessions over real HTTP on 127.0.0.1, on both databases."""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.api import accounts
from server.clock import FakeClock
from server.security import secret_digest
from server.storage.store import Store
from tests.server.accounts_kit import (
    PASSWORD,
    all_rows,
    create_node,
    login,
    register,
    text_in_database,
    unique_email,
)
from tests.server.conftest import LiveServer, make_settings, new_client, start_server

REGISTER = "/api/v1/accounts"


def valid_registration(**changes: Any) -> dict[str, Any]:
    return {
        "name": "Dev Eloper",
        "email": unique_email(),
        "company": "ACME VPN",
        "password": PASSWORD,
        **changes,
    }


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    return error


# -- registration -----------------------------------------------------------------------------
async def test_register_returns_account_and_a_working_key(client: aiohttp.ClientSession) -> None:
    body = valid_registration(email="New.Dev@Example.com")
    async with client.post(REGISTER, json=body) as r:
        assert r.status == 201
        data = await r.json()
    account, key = data["account"], data["api_key"]
    assert key.startswith("oc_key_")
    assert data["key"]["prefix"] == key[:13]
    assert account["email"] == "new.dev@example.com"
    assert account["plan"] == "free"
    assert account["saved_monitoring"] is False
    assert account["limits"]["max_nodes"] == 3
    assert account["company"] == "ACME VPN"
    assert "password" not in json.dumps(data)
    async with client.get("/api/v1/account", headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 200
        assert (await r.json())["account"] == account


async def test_duplicate_email_is_409_in_any_case(client: aiohttp.ClientSession) -> None:
    await register(client, email="same@example.com")
    async with client.post(REGISTER, json=valid_registration(email="SAME@example.COM")) as r:
        assert r.status == 409
        assert (await error_of(r))["code"] == "conflict"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "bell\x07"}, "name"),
        ({"name": 42}, "name"),
        ({"name": "   "}, "name"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": "x" * 300 + "@example.com"}, "email"),
        ({"email": ["a@example.com"]}, "email"),
        ({"company": "c" * 201}, "company"),
        ({"password": "short"}, "password"),
        ({"password": "p" * 1025}, "password"),
        ({"password": None}, "password"),
        ({"plan": "enterprise"}, "plan"),
        ({"saved_monitoring": True}, "saved_monitoring"),
        ({"is_admin": True}, "is_admin"),
    ],
)
async def test_registration_422_names_the_field(
    client: aiohttp.ClientSession, changes: dict[str, Any], field: str
) -> None:
    async with client.post(REGISTER, json=valid_registration(**changes)) as r:
        assert r.status == 422
        error = await error_of(r)
    assert error["code"] == "invalid"
    assert error["field"] == field


@pytest.mark.parametrize("missing", ["name", "email", "password"])
async def test_registration_missing_field(client: aiohttp.ClientSession, missing: str) -> None:
    body = valid_registration()
    del body[missing]
    async with client.post(REGISTER, json=body) as r:
        assert r.status == 422
        assert (await error_of(r))["field"] == missing


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe garbage", "application/json"),
        (b'{"name": NaN}', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"a string"', "application/json"),
        (b"null", "application/json"),
        (b"[" * 50_000 + b"]" * 50_000, "application/json"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "application/json"),
        (b"name=x&email=y", "application/x-www-form-urlencoded"),
        (b'{"name": "x"}', "text/plain"),
    ],
)
async def test_malformed_bodies_are_400(
    client: aiohttp.ClientSession, raw: bytes, content_type: str
) -> None:
    async with client.post(REGISTER, data=raw, headers={"Content-Type": content_type}) as r:
        assert r.status == 400
        assert (await error_of(r))["code"] == "bad_request"


async def test_oversized_body_is_413(client: aiohttp.ClientSession) -> None:
    body = valid_registration(name="x" * 400_000)
    async with client.post(REGISTER, json=body) as r:
        assert r.status == 413
        assert (await error_of(r))["code"] == "payload_too_large"


async def test_registration_is_rate_limited_per_client(client: aiohttp.ClientSession) -> None:
    limit = int(accounts.REGISTRATIONS.burst)
    for _ in range(limit):  # invalid bodies count too: no password hashing for them
        async with client.post(REGISTER, json={"name": "x"}) as r:
            assert r.status == 422
    async with client.post(REGISTER, json=valid_registration()) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert (await error_of(r))["code"] == "rate_limited"


# -- the account ------------------------------------------------------------------------------
async def test_patch_account(client: aiohttp.ClientSession) -> None:
    who = await register(client)
    patch = {"name": "Renamed", "company": None, "plan": "pro"}
    async with client.patch("/api/v1/account", json=patch, headers=who.headers) as r:
        assert r.status == 200
        account = (await r.json())["account"]
    assert (account["name"], account["company"], account["plan"]) == ("Renamed", None, "pro")
    assert account["limits"]["max_nodes"] == 50
    async with client.patch("/api/v1/account", json={}, headers=who.headers) as r:
        assert (await r.json())["account"] == account


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"name": None}, "name"),
        ({"plan": None}, "plan"),
        ({"plan": "gold"}, "plan"),
        ({"saved_monitoring": None}, "saved_monitoring"),
        ({"email": "x@example.com"}, "email"),
        ({"company": "\x00"}, "company"),
    ],
)
async def test_patch_account_422(
    client: aiohttp.ClientSession, patch: dict[str, Any], field: str
) -> None:
    who = await register(client)
    async with client.patch("/api/v1/account", json=patch, headers=who.headers) as r:
        assert r.status == 422
        assert (await error_of(r))["field"] == field


async def test_downgrade_over_the_node_limit_is_409(client: aiohttp.ClientSession) -> None:
    who = await register(client, plan="pro")
    for i in range(4):
        await create_node(client, who, f"n{i}")
    async with client.patch("/api/v1/account", json={"plan": "free"}, headers=who.headers) as r:
        assert r.status == 409
        error = await error_of(r)
    assert "free plan allows 3 nodes" in error["message"]
    async with client.get("/api/v1/account", headers=who.headers) as r:
        assert (await r.json())["account"]["plan"] == "pro"


# -- authentication ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer oc_key_" + "A" * 43},
        {"Authorization": "Bearer oc_node_" + "A" * 43},
        {"Authorization": "Bearer oc_key_" + "A" * 5000},
        {"Authorization": "Bearer ' OR 1=1 --"},
        {"Cookie": "oc_session=forged"},
        {"Cookie": "oc_session=" + "A" * 43},
    ],
)
async def test_401_without_valid_credentials(
    client: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    for method, path in [("GET", "/api/v1/account"), ("GET", "/api/v1/nodes")]:
        async with client.request(method, path, headers=headers) as r:
            assert r.status == 401
            error = await error_of(r)
        assert error == {"code": "unauthorized", "message": "missing or invalid credentials"}


async def test_api_keys_create_list_revoke(client: aiohttp.ClientSession) -> None:
    who = await register(client)
    async with client.post("/api/v1/account/keys", json={"name": "ci"}, headers=who.headers) as r:
        assert r.status == 201
        created = await r.json()
    second = created["api_key"]
    assert second.startswith("oc_key_")
    async with client.get("/api/v1/account/keys", headers=who.headers) as r:
        listed = await r.json()
    assert sorted(k["name"] for k in listed["keys"]) == ["ci", "default"]
    assert who.api_key not in json.dumps(listed)
    assert second not in json.dumps(listed)
    bearer = {"Authorization": f"Bearer {second}"}
    async with client.get("/api/v1/account", headers=bearer) as r:
        assert r.status == 200
    key_id = created["key"]["id"]
    async with client.delete(f"/api/v1/account/keys/{key_id}", headers=who.headers) as r:
        assert r.status == 204
    async with client.get("/api/v1/account", headers=bearer) as r:
        assert r.status == 401
    async with client.delete(f"/api/v1/account/keys/{key_id}", headers=who.headers) as r:
        assert r.status == 404


async def test_keys_of_another_account_are_404(client: aiohttp.ClientSession) -> None:
    a, b = await register(client), await register(client)
    async with client.get("/api/v1/account/keys", headers=a.headers) as r:
        key_id = (await r.json())["keys"][0]["id"]
    for path in (f"/api/v1/account/keys/{key_id}", "/api/v1/account/keys/not-an-id"):
        async with client.delete(path, headers=b.headers) as r:
            assert r.status == 404
    async with client.get("/api/v1/account", headers=a.headers) as r:
        assert r.status == 200


async def test_key_name_422(client: aiohttp.ClientSession) -> None:
    who = await register(client)
    for bad in ("", "k" * 65, "\n", 7):
        async with client.post(
            "/api/v1/account/keys", json={"name": bad}, headers=who.headers
        ) as r:
            assert r.status == 422
            assert (await error_of(r))["field"] == "name"


async def test_failed_authentication_is_rate_limited(client: aiohttp.ClientSession) -> None:
    bad = {"Authorization": "Bearer oc_key_" + "B" * 43}
    for _ in range(30):
        async with client.get("/api/v1/account", headers=bad) as r:
            assert r.status == 401
    async with client.get("/api/v1/account", headers=bad) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) >= 1


# -- dashboard sessions -----------------------------------------------------------------------
async def test_login_sets_a_strict_httponly_cookie(
    client: aiohttp.ClientSession, server: LiveServer
) -> None:
    who = await register(client)
    async with client.post(
        "/api/v1/session", json={"email": who.email.upper(), "password": PASSWORD}
    ) as r:
        assert r.status == 200
        data = await r.json()
        raw = r.headers.getall("Set-Cookie")
    assert data["account"]["id"] == who.id
    assert len(data["csrf_token"]) == 43
    assert len(raw) == 1
    morsel = SimpleCookie(raw[0])["oc_session"]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) == 12 * 3600
    assert not morsel["secure"]
    async with client.get("/api/v1/session") as r:
        assert r.status == 200
        again = await r.json()
    assert again["csrf_token"] == data["csrf_token"]
    async with client.get("/api/v1/account") as r:
        assert r.status == 200


async def test_cookie_is_secure_behind_https(
    tmp_path: Path, db_url: str, store: Store, clock: FakeClock
) -> None:
    settings = make_settings(tmp_path, db_url, public_url="https://alert.example.com")
    live, runner = await start_server(settings, store, clock)
    try:
        async with new_client(live.url) as client:
            who = await register(client)
            async with client.post(
                "/api/v1/session", json={"email": who.email, "password": PASSWORD}
            ) as r:
                assert r.status == 200
                morsel = SimpleCookie(r.headers["Set-Cookie"])["oc_session"]
        assert morsel["secure"] is True
    finally:
        await runner.cleanup()


async def test_wrong_password_and_unknown_email_look_the_same(
    client: aiohttp.ClientSession,
) -> None:
    who = await register(client)
    answers = []
    for body in (
        {"email": who.email, "password": "wrong password!!"},
        {"email": "nobody@example.com", "password": "wrong password!!"},
    ):
        async with client.post("/api/v1/session", json=body) as r:
            answers.append((r.status, await r.json(), "Set-Cookie" in r.headers))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401


async def test_login_is_rate_limited_per_email(client: aiohttp.ClientSession) -> None:
    who = await register(client)
    wrong = {"email": who.email, "password": "not the password"}
    for _ in range(int(accounts.LOGIN_FAILURES.burst)):
        async with client.post("/api/v1/session", json=wrong) as r:
            assert r.status == 401
    async with client.post("/api/v1/session", json={**wrong, "password": PASSWORD}) as r:
        assert r.status == 429
        assert "Retry-After" in r.headers


async def test_login_is_rate_limited_per_client(client: aiohttp.ClientSession) -> None:
    for i in range(int(accounts.LOGINS.burst)):
        body = {"email": f"nobody{i}@example.com", "password": "x"}
        async with client.post("/api/v1/session", json=body) as r:
            assert r.status == 401
    async with client.post("/api/v1/session", json=body) as r:
        assert r.status == 429


async def test_csrf_required_for_cookie_writes(client: aiohttp.ClientSession) -> None:
    who = await register(client)
    session = await login(client, who.email)
    csrf = session["csrf_token"]
    near_miss = csrf[:-1] + ("B" if csrf[-1] == "A" else "A")
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": near_miss}):
        async with client.post("/api/v1/nodes", json={"name": "n"}, headers=headers) as r:
            assert r.status == 403
            assert (await error_of(r))["code"] == "forbidden"
        async with client.patch("/api/v1/account", json={"name": "n"}, headers=headers) as r:
            assert r.status == 403
        async with client.delete("/api/v1/session", headers=headers) as r:
            assert r.status == 403
    async with client.post(
        "/api/v1/nodes", json={"name": "n"}, headers={"X-CSRF-Token": csrf}
    ) as r:
        assert r.status == 201
    async with client.get("/api/v1/nodes") as r:  # reads need no CSRF token
        assert r.status == 200


async def test_bearer_writes_need_no_csrf(
    client: aiohttp.ClientSession, server: LiveServer
) -> None:
    who = await register(client)
    async with (
        new_client(server.url) as fresh,  # no cookie at all
        fresh.post("/api/v1/nodes", json={"name": "n"}, headers=who.headers) as r,
    ):
        assert r.status == 201


async def test_bearer_header_wins_over_the_cookie(client: aiohttp.ClientSession) -> None:
    who = await register(client)
    await login(client, who.email)
    async with client.get("/api/v1/account", headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401


async def test_session_expires(client: aiohttp.ClientSession, server: LiveServer) -> None:
    who = await register(client)
    await login(client, who.email)
    server.clock.advance(12 * 3600 - 1)
    async with client.get("/api/v1/session") as r:
        assert r.status == 200
    server.clock.advance(2)
    async with client.get("/api/v1/session") as r:
        assert r.status == 401
    async with client.get("/api/v1/account") as r:
        assert r.status == 401


async def test_logout_deletes_the_session(
    client: aiohttp.ClientSession, server: LiveServer
) -> None:
    who = await register(client)
    data = await login(client, who.email)
    cookie = next(c for c in client.cookie_jar if c.key == "oc_session").value
    async with client.delete("/api/v1/session", headers={"X-CSRF-Token": data["csrf_token"]}) as r:
        assert r.status == 204
        morsel = SimpleCookie(r.headers["Set-Cookie"])["oc_session"]
    assert morsel.value == ""
    assert not await text_in_database(server.store, secret_digest(cookie))
    replayed = {"Cookie": f"oc_session={cookie}"}
    async with (
        new_client(server.url) as replay,
        replay.get("/api/v1/account", headers=replayed) as r,
    ):
        assert r.status == 401


async def test_get_session_needs_the_cookie(client: aiohttp.ClientSession) -> None:
    who = await register(client)
    async with client.get("/api/v1/session", headers=who.headers) as r:
        assert r.status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com"}, "password"),
        ({"password": "x"}, "email"),
        ({"email": "a@example.com", "password": "x", "remember": 1}, "remember"),
    ],
)
async def test_login_422(client: aiohttp.ClientSession, body: dict[str, Any], field: str) -> None:
    async with client.post("/api/v1/session", json=body) as r:
        assert r.status == 422
        assert (await error_of(r))["field"] == field


# -- nothing secret is stored -----------------------------------------------------------------
async def test_keys_sessions_passwords_never_stored_in_plain_text(
    client: aiohttp.ClientSession, server: LiveServer
) -> None:
    who = await register(client)
    session = await login(client, who.email)
    cookie = next(c for c in client.cookie_jar if c.key == "oc_session").value
    async with client.post("/api/v1/account/keys", json={"name": "x"}, headers=who.headers) as r:
        second = (await r.json())["api_key"]
    node_token = (await create_node(client, who))["token"]
    for secret in (who.api_key, second, cookie, session["csrf_token"], PASSWORD, node_token):
        assert not await text_in_database(server.store, secret), secret[:10]
    rows = await all_rows(server.store)
    assert len(rows["api_keys"]) == 2
    assert len(rows["sessions"]) == 1


async def test_account_routes_match_their_openapi() -> None:
    registered = {
        (route.path, route.method.lower())
        for route in accounts.routes
        if isinstance(route, aiohttp.web.RouteDef)
    }
    documented = {
        (path, method)
        for path, item in accounts.OPENAPI.items()
        for method in item
        if method != "parameters"
    }
    assert registered == documented
