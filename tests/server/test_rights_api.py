"""The data-rights API over real HTTP on 127.0.0.1, on both databases: the saved-monitoring
consent in PATCH /api/v1/account (API key and session), deletion on request with its status
URL, the export (complete, streamed, nothing secret), hostile input and tenant isolation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from server.api import rights
from server.app import ROUTE_MODULES
from server.clock import FakeClock
from server.config import ServerSettings
from server.errors import Unavailable
from server.security import secret_digest
from server.storage import rights as rights_store
from server.storage.datamap import EXPORT, Section
from server.storage.store import Store
from tests.server.accounts_kit import PASSWORD, all_rows, create_node, login, register
from tests.server.conftest import build_app, new_client
from tests.server.rights_kit import (
    Seeded,
    identifying,
    mentions,
    monitored_counts,
    node_rows,
    seed_account,
    seed_monitored,
)

ACCOUNT = "/api/v1/account"
EXPORT_PATH = "/api/v1/account/export"
REQUEST_ACCOUNT_ID = [("deletion_requests", "account_id")]


@dataclass
class Rig:
    url: URL
    app: web.Application
    store: Store
    clock: FakeClock
    told: list[str] = field(default_factory=list)
    """Account ids the consent listener was called with."""


@pytest.fixture
async def rig(settings: ServerSettings, store: Store, clock: FakeClock) -> AsyncIterator[Rig]:
    """The real app; the rights routes added if app.py does not list them yet, and a consent
    listener that records what it is told."""
    app = build_app(settings, store, clock)
    if rights not in ROUTE_MODULES:
        app.router.add_routes(rights.routes)
    told: list[str] = []

    async def listener(account_id: str) -> None:
        told.append(account_id)

    if rights.CONSENT_LISTENERS in app:
        app[rights.CONSENT_LISTENERS].append(listener)
    else:
        listeners: list[rights.Listener] = [listener]
        app[rights.CONSENT_LISTENERS] = listeners
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield Rig(URL.build(scheme="http", host=host, port=port), app, store, clock, told)
    finally:
        await runner.cleanup()


@pytest.fixture
async def http(rig: Rig) -> AsyncIterator[aiohttp.ClientSession]:
    async with new_client(rig.url) as session:
        yield session


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def patch(
    http: aiohttp.ClientSession, key: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.patch(ACCOUNT, json=body, headers=bearer(key)) as r:
        return r.status, await r.json()


async def key_id(http: aiohttp.ClientSession, key: str) -> str:
    async with http.get("/api/v1/account/keys", headers=bearer(key)) as r:
        return str((await r.json())["keys"][0]["id"])


# -- consent -----------------------------------------------------------------------------------
async def test_consent_on_with_an_api_key_records_the_key_and_time(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    who = await register(http, plan="pro")
    rig.clock.advance(100)
    status, body = await patch(http, who.api_key, {"saved_monitoring": True})
    assert status == 200, body
    account = body["account"]
    assert account["saved_monitoring"] is True
    saved = account["saved"]
    assert saved["nodes"] is None
    assert saved["consented_at"] == rig.clock.time()
    assert saved["consented_by"] == f"api_key:{await key_id(http, who.api_key)}"
    assert saved["retention_days"] == 30
    assert saved["what"] == list(rights.WHAT_IS_SAVED)
    assert len(saved["what"]) >= 4
    assert all(isinstance(line, str) and line for line in saved["what"])
    async with http.get(ACCOUNT, headers=who.headers) as r:
        assert (await r.json())["account"] == account
    assert rig.told == [who.id]
    status, body = await patch(http, who.api_key, {"saved_monitoring": False})
    assert status == 200
    assert (body["account"]["saved_monitoring"], body["account"]["saved"]) == (False, None)
    assert rig.told == [who.id, who.id]
    assert not (await all_rows(rig.store))["saved_monitoring"]


async def test_consent_with_a_session_records_the_session(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    who = await register(http, plan="business")
    node = (await create_node(http, who))["node"]
    session = await login(http, who.email)
    cookie = next(c for c in http.cookie_jar if c.key == "oc_session").value
    body = {"saved_monitoring": True, "saved_nodes": [node["id"]]}
    async with http.patch(ACCOUNT, json=body) as r:  # no CSRF token
        assert r.status == 403
    async with http.patch(ACCOUNT, json=body, headers={"X-CSRF-Token": session["csrf_token"]}) as r:
        assert r.status == 200
        saved = (await r.json())["account"]["saved"]
    assert saved["consented_by"] == f"session:{secret_digest(cookie)[:16]}"
    assert saved["nodes"] == [node["id"]]
    assert saved["retention_days"] == 90
    async with http.get("/api/v1/session") as r:
        assert (await r.json())["account"]["saved"] == saved


async def test_free_plan_is_403_and_an_upgrade_in_the_same_request_works(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    who = await register(http)
    status, body = await patch(http, who.api_key, {"saved_monitoring": True, "name": "New"})
    assert status == 403
    assert "not included in the free plan" in body["error"]["message"]
    async with http.get(ACCOUNT, headers=who.headers) as r:
        account = (await r.json())["account"]
    assert (account["name"], account["saved_monitoring"]) == ("Dev Eloper", False)
    status, body = await patch(http, who.api_key, {"saved_monitoring": True, "plan": "pro"})
    assert status == 200
    assert (body["account"]["plan"], body["account"]["saved_monitoring"]) == ("pro", True)


async def test_a_downgrade_to_a_plan_without_it_needs_the_consent_off(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    who = await register(http, plan="pro")
    await patch(http, who.api_key, {"saved_monitoring": True})
    status, body = await patch(http, who.api_key, {"plan": "free"})
    assert status == 409
    assert "turn it off first" in body["error"]["message"]
    status, body = await patch(http, who.api_key, {"plan": "free", "saved_monitoring": False})
    assert status == 200
    assert (body["account"]["plan"], body["account"]["saved_monitoring"]) == ("free", False)


async def test_nodes_of_another_account_are_422(rig: Rig, http: aiohttp.ClientSession) -> None:
    a, b = await register(http, plan="pro"), await register(http, plan="pro")
    mine = (await create_node(http, a))["node"]["id"]
    theirs = (await create_node(http, b))["node"]["id"]
    for nodes in ([theirs], [mine, theirs], ["0" * 32]):
        status, body = await patch(
            http, a.api_key, {"saved_monitoring": True, "saved_nodes": nodes}
        )
        assert status == 422
        assert body["error"]["field"] == "saved_nodes"
        assert theirs not in json.dumps(body)
    assert not (await all_rows(rig.store))["saved_monitoring"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"saved_monitoring": None}, "saved_monitoring"),
        ({"saved_monitoring": "yes"}, "saved_monitoring"),
        ({"saved_monitoring": 1}, "saved_monitoring"),
        ({"saved_nodes": None}, "saved_nodes"),
        ({"keep_saved_data": True}, "keep_saved_data"),
        ({"saved_monitoring": True, "saved_nodes": []}, "saved_nodes"),
        ({"saved_monitoring": True, "saved_nodes": ["not-an-id"]}, "saved_nodes.0"),
        ({"saved_monitoring": True, "saved_nodes": "all"}, "saved_nodes"),
        ({"saved_monitoring": True, "saved_nodes": ["a" * 32] * 1001}, "saved_nodes"),
        ({"saved_monitoring": False, "saved_nodes": ["a" * 32]}, "saved_nodes"),
        ({"saved_monitoring": False, "keep_saved_data": None}, "keep_saved_data"),
        ({"saved_monitoring": True, "retention": 5}, "retention"),
    ],
)
async def test_consent_body_422(
    rig: Rig, http: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    who = await register(http, plan="pro")
    status, answer = await patch(http, who.api_key, body)
    assert status == 422, answer
    assert answer["error"]["field"] == field


async def test_malformed_and_oversized_bodies(rig: Rig, http: aiohttp.ClientSession) -> None:
    who = await register(http, plan="pro")
    for raw in (b'{"saved_monitoring": tru', b"[true]", b'{"saved_monitoring": NaN}'):
        async with http.patch(
            ACCOUNT, data=raw, headers={**who.headers, "Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
    huge = {"saved_monitoring": True, "saved_nodes": ["a" * 32] * 20_000}
    async with http.patch(ACCOUNT, json=huge, headers=who.headers) as r:
        assert r.status == 413
    assert not (await all_rows(rig.store))["saved_monitoring"]


async def _pro_with_data(rig: Rig, nodes: int = 2) -> Seeded:
    seeded = await seed_account(rig.store, nodes=nodes)
    await rig.store.set_consent(seeded.id, nodes=None, by="test", now=rig.clock.time())
    await seed_monitored(rig.store, seeded.node_ids, seeded.endpoint_ids)
    return seeded


async def test_opting_out_deletes_every_saved_row(rig: Rig, http: aiohttp.ClientSession) -> None:
    a, b = await _pro_with_data(rig), await _pro_with_data(rig)
    before = await monitored_counts(rig.store)
    status, _ = await patch(http, a.api_key, {"saved_monitoring": False})
    assert status == 200
    assert await monitored_counts(rig.store) == {k: v // 2 for k, v in before.items()}
    assert [await node_rows(rig.store, n) for n in a.node_ids] == [0, 0]
    assert all([await node_rows(rig.store, n) for n in b.node_ids])


async def test_opting_out_with_keep_saved_data_keeps_them(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    a = await _pro_with_data(rig)
    before = await monitored_counts(rig.store)
    body = {"saved_monitoring": False, "keep_saved_data": True}
    status, answer = await patch(http, a.api_key, body)
    assert status == 200
    assert answer["account"]["saved_monitoring"] is False
    assert await monitored_counts(rig.store) == before


async def test_narrowing_deletes_the_unchosen_nodes_rows(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    a = await _pro_with_data(rig, nodes=3)
    kept = a.node_ids[2]
    status, body = await patch(http, a.api_key, {"saved_monitoring": True, "saved_nodes": [kept]})
    assert status == 200
    assert body["account"]["saved"]["nodes"] == [kept]
    assert [await node_rows(rig.store, n) for n in a.node_ids[:2]] == [0, 0]
    assert await node_rows(rig.store, kept) > 0
    assert rig.told == [a.id]


# -- deletion ------------------------------------------------------------------------------------
async def delete_account(
    http: aiohttp.ClientSession, key: str
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    async with http.delete(ACCOUNT, headers=bearer(key)) as r:
        return r.status, await r.json(), r


async def test_deletion_without_holds_removes_everything(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    a = await _pro_with_data(rig)
    other = await _pro_with_data(rig)
    await rig.store.create_session(a.id, "s" * 43, now=rig.clock.time(), expires_at=2e9)
    status, body, _ = await delete_account(http, a.api_key)
    assert status == 202, body
    deletion = body["deletion"]
    assert set(deletion) == {
        "id", "state", "requested_at", "completed_at", "holds", "status_url",
    }  # fmt: skip
    assert deletion["state"] == "completed"
    assert deletion["requested_at"] == deletion["completed_at"] == rig.clock.time()
    assert deletion["holds"] == []
    token = deletion["status_url"].rsplit("/", 1)[1]
    assert token.startswith("oc_del_")
    assert await mentions(rig.store, identifying(a), ignore=REQUEST_ACCOUNT_ID) == []
    assert await mentions(rig.store, [token]) == []  # only its digest is stored
    rows = await all_rows(rig.store)
    assert [row[2] for row in rows["deletion_requests"]] == [secret_digest(token)]
    for secret in a.secrets:
        assert await mentions(rig.store, [secret]) == []
    async with http.get(ACCOUNT, headers=bearer(a.api_key)) as r:
        assert r.status == 401
    async with new_client(rig.url) as anonymous, anonymous.get(deletion["status_url"]) as r:
        assert r.status == 200
        assert (await r.json())["deletion"] == deletion
    async with http.get(ACCOUNT, headers=bearer(other.api_key)) as r:
        assert r.status == 200
    assert all([await node_rows(rig.store, n) for n in other.node_ids])
    assert rig.told == [a.id]


async def test_deletion_with_a_hold_keeps_the_held_categories_until_release(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    a = await _pro_with_data(rig)
    now = rig.clock.time()
    hold = await rig.store.add_hold(
        a.id,
        kind="dispute",
        reason="chargeback 1234",
        categories=["registration", "webhooks"],
        ends_at=now + 86_400,
        now=now,
    )
    status, body, _ = await delete_account(http, a.api_key)
    assert status == 202
    deletion = body["deletion"]
    assert (deletion["state"], deletion["completed_at"]) == ("held", None)
    assert deletion["holds"] == [
        {"kind": "dispute", "categories": ["registration", "webhooks"], "ends_at": now + 86_400}
    ]
    assert "chargeback" not in json.dumps(body)  # the reason is the operator's
    rows = await all_rows(rig.store)
    assert sorted(row[2] for row in rows["held_data"]) == ["registration", "webhooks"]
    for table in ("accounts", "nodes", "webhook_endpoints", "api_keys", "saved_monitoring"):
        assert rows[table] == [], table
    assert not any((await monitored_counts(rig.store)).values())
    await rig.store.release_hold(hold.id, now=rig.clock.time())
    async with http.get(deletion["status_url"]) as r:
        status_body = (await r.json())["deletion"]
    assert (status_body["state"], status_body["holds"]) == ("completed", [])
    assert status_body["completed_at"] == rig.clock.time()
    assert await mentions(rig.store, identifying(a), ignore=REQUEST_ACCOUNT_ID) == []


async def test_status_url_of_a_wrong_token_is_404(rig: Rig, http: aiohttp.ClientSession) -> None:
    a = await seed_account(rig.store)
    status, body, _ = await delete_account(http, a.api_key)
    assert status == 202
    good = body["deletion"]["status_url"]
    for path in (
        good[:-1] + ("A" if good[-1] != "A" else "B"),
        "/api/v1/deletions/oc_del_" + "x" * 43,
        "/api/v1/deletions/" + body["deletion"]["id"],
        "/api/v1/deletions/oc_del_' OR 1=1 --",
        "/api/v1/deletions/oc_del_" + "x" * 500,
    ):
        async with http.get(path) as r:
            assert r.status == 404, path
            assert (await r.json())["error"]["code"] == "not_found"


async def test_deletion_through_a_session_needs_csrf_and_clears_the_cookie(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    who = await register(http)
    session = await login(http, who.email)
    async with http.delete(ACCOUNT) as r:
        assert r.status == 403
    async with http.delete(ACCOUNT, headers={"X-CSRF-Token": session["csrf_token"]}) as r:
        assert r.status == 202
        assert r.cookies["oc_session"].value == ""
    async with http.post("/api/v1/session", json={"email": who.email, "password": PASSWORD}) as r:
        assert r.status == 401


async def test_another_account_cannot_delete_or_export_mine(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    a, b = await _pro_with_data(rig), await _pro_with_data(rig)
    async with http.get(EXPORT_PATH, headers=bearer(b.api_key)) as r:
        text = await r.text()
    for needle in identifying(a):
        assert needle not in text
    status, _, _ = await delete_account(http, b.api_key)
    assert status == 202
    async with http.get(ACCOUNT, headers=bearer(a.api_key)) as r:
        assert r.status == 200
    assert all([await node_rows(rig.store, n) for n in a.node_ids])


# -- export --------------------------------------------------------------------------------------
async def export(http: aiohttp.ClientSession, key: str) -> dict[str, Any]:
    async with http.get(EXPORT_PATH, headers=bearer(key)) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("application/json")
        assert "attachment" in r.headers["Content-Disposition"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cache-Control"] == "no-store"
        data: dict[str, Any] = json.loads(await r.read())
    return data


async def test_export_has_everything_and_no_secret(
    rig: Rig, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rights_store, "EXPORT_PAGE", 2)  # several pages per table
    a = await _pro_with_data(rig, nodes=3)
    await _pro_with_data(rig)  # another account's rows stay out
    now = rig.clock.time()
    await rig.store.create_session(a.id, "s" * 43, now=now, expires_at=now + 3600)
    await rig.store.add_hold(
        a.id, kind="audit", reason="internal note", categories=["plan"], ends_at=None, now=now
    )
    data = await export(http, a.api_key)
    sections = [s.name for s in EXPORT if s.name != "accounts"]
    assert list(data) == ["export", "account", *sections, "counts"]
    assert data["export"]["account_id"] == a.id
    assert set(data["export"]["omitted"]["accounts"]) == {"password_hash"}
    account = data["account"]
    assert (account["id"], account["email"], account["name"]) == (
        a.id, a.account.email, a.account.name,
    )  # fmt: skip
    assert "password_hash" not in account
    assert [k["id"] for k in data["api_keys"]] == [await key_id(http, a.api_key)]
    assert data["sessions"] == [{"account_id": a.id, "created_at": now, "expires_at": now + 3600}]
    assert sorted(n["id"] for n in data["nodes"]) == sorted(a.node_ids)
    assert [e["url"] for e in data["webhook_endpoints"]] == list(a.urls)
    assert data["saved_monitoring"][0]["consented_by"] == "test"
    (hold,) = data["legal_holds"]
    assert (hold["kind"], hold["categories"], hold["ends_at"]) == ("audit", ["plan"], None)
    assert "reason" not in hold
    assert "internal note" not in json.dumps(data)
    mine = set(a.node_ids)
    assert {p["node_id"] for p in data["metric_points"]} == mine
    assert len(data["metric_points"]) == 6
    assert len(data["metric_rollups"]) == len(data["alert_history"]) == 3
    assert len(data["delivery_queue"]) == 3
    assert len(data["delivery_attempts"]) == 1
    assert data["counts"] == {
        name: (1 if name == "accounts" else len(data[name])) for name in [s.name for s in EXPORT]
    }
    text = json.dumps(data)
    for secret in a.secrets:  # API key, node tokens, webhook secrets and routing keys
        assert secret not in text
    for row in (await all_rows(rig.store))["api_keys"] + (await all_rows(rig.store))["nodes"]:
        assert not any(str(v) in text for v in row if isinstance(v, str) and len(v) == 64)
    assert secret_digest("s" * 43) not in text


async def test_an_export_failing_midway_never_ends_as_valid_json(
    rig: Rig, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    who = await register(http)
    real = rig.store.export_page
    calls = 0

    async def failing(account_id: str, section: Section, after: Any = None) -> Any:
        nonlocal calls
        calls += 1
        if calls == limit:
            raise Unavailable("storage is not reachable")
        return await real(account_id, section, after)

    monkeypatch.setattr(rig.store, "export_page", failing)
    limit = 1  # before the response starts: a JSON error
    async with http.get(EXPORT_PATH, headers=who.headers) as r:
        assert r.status == 503
        assert (await r.json())["error"]["code"] == "unavailable"
    calls, limit = 0, 4  # midway: the connection is cut, the document never completes
    async with http.get(EXPORT_PATH, headers=who.headers) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()


async def test_a_failing_consent_listener_does_not_undo_the_change(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    async def broken(account_id: str) -> None:
        raise RuntimeError("cache down")

    rig.app[rights.CONSENT_LISTENERS].insert(0, broken)
    who = await register(http, plan="pro")
    status, body = await patch(http, who.api_key, {"saved_monitoring": True})
    assert status == 200
    assert body["account"]["saved_monitoring"] is True
    assert rig.told == [who.id]  # the next listener was still told


async def test_export_of_a_new_account(rig: Rig, http: aiohttp.ClientSession) -> None:
    who = await register(http)
    data = await export(http, who.api_key)
    assert data["account"]["id"] == who.id
    assert data["saved_monitoring"] == data["metric_points"] == data["legal_holds"] == []
    assert data["counts"]["api_keys"] == 1


async def test_exports_are_rate_limited_per_account(rig: Rig, http: aiohttp.ClientSession) -> None:
    who, other = await register(http), await register(http)
    for _ in range(int(rights.EXPORTS.burst)):
        await export(http, who.api_key)
    async with http.get(EXPORT_PATH, headers=who.headers) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) >= 1
    await export(http, other.api_key)


# -- every route: authentication and documentation ----------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer oc_key_" + "A" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Cookie": "oc_session=forged"},
    ],
)
async def test_401_without_valid_credentials(
    rig: Rig, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    await seed_account(rig.store)
    for method, path, body in [
        ("PATCH", ACCOUNT, {"saved_monitoring": True}),
        ("DELETE", ACCOUNT, None),
        ("GET", EXPORT_PATH, None),
    ]:
        async with http.request(method, path, json=body, headers=headers) as r:
            assert r.status == 401, (method, path)
            assert (await r.json())["error"]["code"] == "unauthorized"
    assert len((await all_rows(rig.store))["accounts"]) == 1


async def test_rights_routes_match_their_openapi() -> None:
    registered = {
        (route.path, route.method.lower())
        for route in rights.routes
        if isinstance(route, web.RouteDef)
    }
    documented = {
        (path, method)
        for path, item in rights.OPENAPI.items()
        for method in item
        if method != "parameters"
    }
    assert registered == documented
