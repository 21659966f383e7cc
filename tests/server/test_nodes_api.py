"""Nodes over real HTTP on 127.0.0.1, on both databases: lifecycle, plan limits, tenant
isolation on every node route, hostile input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, web

from agent.protocol import STREAM_PATH, Hello, dumps
from server.api import nodes
from server.ingest import SOCKETS
from server.security import secret_digest
from tests.server.accounts_kit import (
    Registered,
    create_node,
    register,
    text_in_database,
)
from tests.server.conftest import LiveServer

NODE_FIELDS = {
    "id",
    "name",
    "token_prefix",
    "created_at",
    "enrolled",
    "enrolled_at",
    "min_interval",
}


async def status_of(
    client: aiohttp.ClientSession,
    method: str,
    path: str,
    who: Registered | None = None,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    sent = {**(who.headers if who else {}), **(headers or {})}
    async with client.request(method, path, headers=sent, **kwargs) as r:
        body = await r.json() if r.content_type == "application/json" else None
        return r.status, body


async def test_node_lifecycle(client: aiohttp.ClientSession, server: LiveServer) -> None:
    who = await register(client)
    created = await create_node(client, who, "vpn-fra-1")
    node, token = created["node"], created["token"]
    assert set(node) == NODE_FIELDS
    assert token.startswith("oc_node_")
    assert node["token_prefix"] == token[:14]
    assert node["enrolled"] is False
    assert node["min_interval"] == 30.0
    assert len(node["id"]) == 32
    ref = await server.store.node_by_token(token)
    assert ref is not None
    assert (ref.id, ref.account_id) == (node["id"], who.id)

    status, listed = await status_of(client, "GET", "/api/v1/nodes", who)
    assert status == 200
    assert listed == {"nodes": [node]}
    path = f"/api/v1/nodes/{node['id']}"
    assert await status_of(client, "GET", path, who) == (200, {"node": node})

    status, renamed = await status_of(client, "PATCH", path, who, json={"name": "vpn-fra-2"})
    assert status == 200
    assert renamed["node"]["name"] == "vpn-fra-2"

    status, rotated = await status_of(client, "POST", f"{path}/token", who)
    assert status == 201
    assert rotated["token"] != token
    assert await server.store.node_by_token(token) is None
    assert await server.store.node_by_token(rotated["token"]) is not None

    assert (await status_of(client, "DELETE", path, who))[0] == 204
    assert (await status_of(client, "GET", path, who))[0] == 404
    assert (await status_of(client, "DELETE", path, who))[0] == 404
    assert await server.store.node_by_token(rotated["token"]) is None


async def test_plan_limit_is_403_naming_plan_and_limit(client: aiohttp.ClientSession) -> None:
    who = await register(client)
    for i in range(3):
        await create_node(client, who, f"n{i}")
    status, body = await status_of(client, "POST", "/api/v1/nodes", who, json={"name": "n4"})
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert "free plan allows at most 3 nodes" in body["error"]["message"]
    status, _ = await status_of(client, "PATCH", "/api/v1/account", who, json={"plan": "pro"})
    assert status == 200
    await create_node(client, who, "n4")


async def _node_routes(app: web.Application) -> list[tuple[str, str]]:
    """Every (method, path) the app registers under /api/v1/nodes/{id} — this module's and
    any other module's (live state, history), so isolation covers routes added later."""
    found = []
    for resource in app.router.resources():
        path = resource.canonical
        if not path.startswith("/api/v1/nodes/{id}"):
            continue
        for route in resource:
            if route.method not in ("HEAD", "*"):
                found.append((route.method, path))
    return sorted(set(found))


async def test_tenant_isolation_on_every_node_route(
    client: aiohttp.ClientSession, server: LiveServer
) -> None:
    a, b = await register(client), await register(client)
    created = await create_node(client, a, "a-node")
    node_id = created["node"]["id"]
    routes = await _node_routes(server.app)
    assert ("GET", "/api/v1/nodes/{id}") in routes
    assert ("POST", "/api/v1/nodes/{id}/token") in routes
    for method, template in routes:
        path = template.replace("{id}", node_id)
        status, body = await status_of(client, method, path, b, json={"name": "stolen"})
        assert status == 404, (method, template, body)
        assert body["error"]["code"] == "not_found"
    status, listed = await status_of(client, "GET", "/api/v1/nodes", b)
    assert listed == {"nodes": []}
    # A's node is untouched and its token still works.
    status, body = await status_of(client, "GET", f"/api/v1/nodes/{node_id}", a)
    assert status == 200
    assert body["node"]["name"] == "a-node"
    assert await server.store.node_by_token(created["token"]) is not None


@pytest.mark.parametrize(
    "bad_id",
    ["not-hex", "A" * 32, "0" * 31, "0" * 33, "0" * 5000, "' OR '1'='1", "%00", "%2e%2e", "ü" * 32],
)
async def test_malformed_ids_are_404(client: aiohttp.ClientSession, bad_id: str) -> None:
    who = await register(client)
    for method in ("GET", "PATCH", "DELETE"):
        status, _ = await status_of(
            client, method, f"/api/v1/nodes/{bad_id}", who, json={"name": "x"}
        )
        assert status == 404
    assert (await status_of(client, "POST", f"/api/v1/nodes/{bad_id}/token", who))[0] == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "n" * 65}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": "line\nbreak"}, "name"),
        ({"name": "nul\x00"}, "name"),
        ({"name": "\u202e"}, "name"),  # a format character is not printable
        ({"name": " "}, "name"),
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
        ({"name": ["x"]}, "name"),
        ({"name": {"$gt": ""}}, "name"),
        ({"name": "ok", "token": "oc_node_mine"}, "token"),
        ({"name": "ok", "x" * 500: 1}, "x" * 64),
    ],
)
async def test_node_name_422(
    client: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    who = await register(client)
    status, answer = await status_of(client, "POST", "/api/v1/nodes", who, json=body)
    assert status == 422
    assert answer["error"]["field"] == field
    node_id = (await create_node(client, who))["node"]["id"]
    status, answer = await status_of(client, "PATCH", f"/api/v1/nodes/{node_id}", who, json=body)
    assert status == 422
    assert answer["error"]["field"] == field


@pytest.mark.parametrize(
    "name",
    [
        "🛰️ satellite uplink",
        "Zürich-Ost/α",
        "日本語のノード",
        "x'); DROP TABLE nodes;--",
        "<script>alert(1)</script>",
        "%s%s%n {0} ${jndi:ldap://x}",
        "𝕏" * 64,
        "a" * 64,
    ],
)
async def test_hostile_but_valid_names_round_trip(client: aiohttp.ClientSession, name: str) -> None:
    who = await register(client)
    created = await create_node(client, who, name)
    assert created["node"]["name"] == name
    status, body = await status_of(client, "GET", f"/api/v1/nodes/{created['node']['id']}", who)
    assert status == 200
    assert body["node"]["name"] == name


HOSTILE_BODIES: list[bytes] = [
    b"{",
    b"[]",
    b"1e999999",
    b'{"name": "\\ud800"}',
    b'{"name": "' + b"\\u0000" * 100 + b'"}',
    b'{"name": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    b'{"name": {"a": {"b": {"c": {"d": "deep"}}}}}',
    b'{"name": "' + "ü".encode() * 30_000 + b'"}',
    b'{"name": 123456789012345678901234567890}',
    b'{"name": true}',
    b'{"__proto__": {"admin": true}}',
    b"\x00\x01\x02",
    '{"name": "bom"}'.encode("utf-16"),
]


@pytest.mark.parametrize("raw", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
async def test_hostile_bodies_never_500(client: aiohttp.ClientSession, raw: bytes) -> None:
    who = await register(client, plan="pro")
    node_id = (await create_node(client, who))["node"]["id"]
    targets = [
        ("POST", "/api/v1/accounts"),
        ("PATCH", "/api/v1/account"),
        ("POST", "/api/v1/account/keys"),
        ("POST", "/api/v1/session"),
        ("POST", "/api/v1/nodes"),
        ("PATCH", f"/api/v1/nodes/{node_id}"),
    ]
    for method, path in targets:
        status, body = await status_of(
            client,
            method,
            path,
            who,
            data=raw,
            headers={"Content-Type": "application/json"},
        )
        assert status in (400, 422), (method, path, status, body)
        assert set(body["error"]) >= {"code", "message"}


async def test_unknown_method_and_route_are_json(client: aiohttp.ClientSession) -> None:
    who = await register(client)
    status, body = await status_of(client, "PUT", "/api/v1/nodes", who)
    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"
    status, body = await status_of(client, "GET", "/api/v1/nodes/x/y/z", who)
    assert status == 404


async def test_node_tokens_never_stored_in_plain_text(
    client: aiohttp.ClientSession, server: LiveServer
) -> None:
    who = await register(client)
    created = await create_node(client, who)
    status, rotated = await status_of(
        client, "POST", f"/api/v1/nodes/{created['node']['id']}/token", who
    )
    assert status == 201
    for token in (created["token"], rotated["token"]):
        assert not await text_in_database(server.store, token)
        assert not await text_in_database(server.store, token[14:])
    assert await text_in_database(server.store, secret_digest(rotated["token"]))
    status, listed = await status_of(client, "GET", "/api/v1/nodes", who)
    assert rotated["token"] not in json.dumps(listed)


async def test_min_interval_follows_the_plan(client: aiohttp.ClientSession) -> None:
    who = await register(client, plan="business")
    created = await create_node(client, who)
    assert created["node"]["min_interval"] == 1.0


def test_node_routes_match_their_openapi() -> None:
    registered = {
        (route.path, route.method.lower())
        for route in nodes.routes
        if isinstance(route, web.RouteDef)
    }
    documented = {
        (path, method)
        for path, item in nodes.OPENAPI.items()
        for method in item
        if method != "parameters"
    }
    assert registered == documented
    assert all("/live" not in path for path, _ in registered)


@pytest.mark.parametrize("action", ["rotate", "delete"])
async def test_rotate_and_delete_close_the_open_stream(
    client: aiohttp.ClientSession, server: LiveServer, action: str
) -> None:
    who = await register(client)
    created = await create_node(client, who)
    node_id, token = created["node"]["id"], created["token"]
    stream = server.url.with_path(STREAM_PATH)
    bearer = {"Authorization": f"Bearer {token}"}
    hello = Hello(agent_version="0.1.0", interval=30.0, buffer_seconds=0)
    async with aiohttp.ClientSession() as agent:
        async with agent.ws_connect(stream, headers=bearer, heartbeat=None) as ws:
            await ws.send_str(dumps(hello))
            for _ in range(200):  # until the server has registered the stream
                if server.app[SOCKETS].get(node_id) is not None:
                    break
                await asyncio.sleep(0.01)
            method, path = (
                ("POST", f"/api/v1/nodes/{node_id}/token")
                if action == "rotate"
                else ("DELETE", f"/api/v1/nodes/{node_id}")
            )
            assert (await status_of(client, method, path, who))[0] in (201, 204)
            async with asyncio.timeout(5):
                while not ws.closed:
                    await ws.receive()
            assert ws.close_code == WSCloseCode.POLICY_VIOLATION
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await agent.ws_connect(stream, headers=bearer, heartbeat=None)
        assert refused.value.status == 401
