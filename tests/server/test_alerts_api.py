"""GET /api/v1/alerts and GET /api/v1/nodes/{id}/live over real HTTP, fed by real agent streams:
tenant isolation, filters, malformed queries, the live view's shape and bounds."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from agent.outbox import Outbox
from agent.protocol import Metrics, WireSample
from server.api import alerts as alerts_api, live as live_api
from server.api.live import downsample
from server.keys import LIVE
from tests.server.accounts_kit import Registered, create_node, register
from tests.server.conftest import LiveServer
from tests.server.streamkit import (
    agent_client,
    agent_event,
    agent_metrics,
    event,
    eventually,
    hello,
    metrics_frame,
    running,
)


async def get(
    client: aiohttp.ClientSession, path: str, who: Registered | None, **params: Any
) -> tuple[int, dict[str, Any]]:
    headers = who.headers if who is not None else {}
    async with client.get(path, headers=headers, params=params or None) as response:
        return response.status, await response.json()


async def stream_alerts(
    server: LiveServer, token: str, *events: Any, frame: Metrics | None = None
) -> None:
    """Connect the real agent client, deliver ``events`` (and a metrics frame), disconnect."""
    outbox = Outbox()
    client = agent_client(str(server.url), token, outbox=outbox, hello_builder=lambda: hello(30))
    async with running(client):
        for e in events:
            client.add_event(agent_event(e))
        await eventually(lambda: client.connected and len(outbox) == 0)
        if frame is not None:
            live = server.app[LIVE]
            before = live.total_series
            client.send_metrics(agent_metrics(frame))
            await eventually(lambda: live.total_series > before)


@pytest.fixture
async def fleet(
    server: LiveServer, client: aiohttp.ClientSession
) -> tuple[Registered, Registered, str, str]:
    """Account A with one streaming node (alerts + metrics); account B with a silent node."""
    a = await register(client)
    b = await register(client)
    node_a = await create_node(client, a, "a-node")
    node_b = await create_node(client, b, "b-node")
    await stream_alerts(
        server,
        node_a["token"],
        event(1),
        event(2, fingerprint="00000000000000bb"),
        event(3, fingerprint="00000000000000bb", status="resolved"),
        frame=metrics_frame(1, cpu=42.0, peers="<5"),
    )
    return a, b, node_a["node"]["id"], node_b["node"]["id"]


async def test_alerts_of_the_calling_account_only(
    client: aiohttp.ClientSession, fleet: tuple[Registered, Registered, str, str]
) -> None:
    a, b, node_a, _node_b = fleet
    status, body = await get(client, "/api/v1/alerts", a)
    assert status == 200
    assert [(x["id"], x["status"]) for x in body["alerts"]] == [
        ("evt-00000003", "resolved"),
        ("evt-00000001", "firing"),
    ]
    first = body["alerts"][1]
    assert first["node_id"] == node_a
    assert first["node_name"] == "a-node"
    assert first["rule"] == "cpu_high"
    assert first["fingerprint"] == "00000000000000aa"
    assert body["count"] == 2
    assert body["truncated"] is False
    status, body = await get(client, "/api/v1/alerts", b)
    assert (status, body["alerts"]) == (200, [])


async def test_another_accounts_node_is_404_everywhere(
    client: aiohttp.ClientSession, fleet: tuple[Registered, Registered, str, str]
) -> None:
    a, b, node_a, node_b = fleet
    assert (await get(client, "/api/v1/alerts", b, node=node_a))[0] == 404
    assert (await get(client, f"/api/v1/nodes/{node_a}/live", b))[0] == 404
    assert (await get(client, f"/api/v1/nodes/{node_b}/live", a))[0] == 404
    assert (await get(client, "/api/v1/nodes/" + "0" * 32 + "/live", a))[0] == 404
    assert (await get(client, "/api/v1/nodes/not-an-id/live", a))[0] == 404
    status, body = await get(client, "/api/v1/alerts", a, node=node_a)
    assert status == 200
    assert body["count"] == 2


async def test_filters(
    client: aiohttp.ClientSession, fleet: tuple[Registered, Registered, str, str]
) -> None:
    a, _, _, _ = fleet
    firing = (await get(client, "/api/v1/alerts", a, status="firing"))[1]["alerts"]
    assert [x["id"] for x in firing] == ["evt-00000001"]
    resolved = (await get(client, "/api/v1/alerts", a, status="resolved"))[1]["alerts"]
    assert [x["id"] for x in resolved] == ["evt-00000003"]
    assert (await get(client, "/api/v1/alerts", a, severity="critical"))[1]["alerts"] == []
    warning = (await get(client, "/api/v1/alerts", a, severity="warning"))[1]
    assert warning["count"] == 2
    limited = (await get(client, "/api/v1/alerts", a, limit="1"))[1]
    assert limited["count"] == 1
    assert limited["truncated"] is True


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "pending"}, "status"),
        ({"severity": "fatal"}, "severity"),
        ({"limit": "0"}, "limit"),
        ({"limit": "5001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "²"}, "limit"),
        ({"limit": "9" * 5000}, "limit"),
        ({"nodes": "x"}, "nodes"),
        ({"status": "firing\x00"}, "status"),
    ],
)
async def test_malformed_alert_queries_are_422(
    client: aiohttp.ClientSession, server: LiveServer, params: dict[str, str], field: str
) -> None:
    who = await register(client)
    status, body = await get(client, "/api/v1/alerts", who, **params)
    assert status == 422
    assert body["error"]["field"] == field


async def test_repeated_parameter_is_422(client: aiohttp.ClientSession, server: LiveServer) -> None:
    who = await register(client)
    async with client.get(
        "/api/v1/alerts?status=firing&status=resolved", headers=who.headers
    ) as response:
        assert response.status == 422


async def test_unauthenticated_is_401(client: aiohttp.ClientSession, server: LiveServer) -> None:
    for path in ("/api/v1/alerts", "/api/v1/nodes/" + "0" * 32 + "/live"):
        assert (await get(client, path, None))[0] == 401
        async with client.get(path, headers={"Authorization": "Bearer oc_key_nope"}) as r:
            assert r.status == 401


async def test_live_view(
    client: aiohttp.ClientSession, fleet: tuple[Registered, Registered, str, str]
) -> None:
    a, _, node_a, _ = fleet
    status, body = await get(client, f"/api/v1/nodes/{node_a}/live", a)
    assert status == 200
    node = body["node"]
    assert node["id"] == node_a
    assert node["name"] == "a-node"
    assert node["connected"] is False
    assert node["agent_version"] == "0.1.0"
    assert node["interval"] == 30.0
    assert node["down"] is False
    assert node["last_seen"] > 0
    latest = {x["metric"]: x["value"] for x in body["latest"]}
    assert latest == {"cpu_usage_percent": 42.0, "vpn_active_peers": "<5", "iface_up": 1.0}
    series = {x["metric"]: x for x in body["series"]}
    cpu = series["cpu_usage_percent"]
    assert cpu["step"] == 30.0
    assert len(cpu["points"]) == 30
    assert cpu["points"][-1][1] == 42.0
    assert series["iface_up"]["labels"] == {"iface": "wg0"}
    assert [x["id"] for x in body["alerts"]] == ["evt-00000001"]
    status, body = await get(client, f"/api/v1/nodes/{node_a}/live", a, metric="iface_up")
    assert [x["metric"] for x in body["series"]] == ["iface_up"]
    assert [x["metric"] for x in body["latest"]] == ["iface_up"]
    both = "iface_up,cpu_usage_percent"
    status, body = await get(client, f"/api/v1/nodes/{node_a}/live", a, metric=both)
    assert {x["metric"] for x in body["series"]} == {"iface_up", "cpu_usage_percent"}


async def test_live_view_of_a_node_that_never_connected(
    client: aiohttp.ClientSession, server: LiveServer
) -> None:
    who = await register(client)
    node = await create_node(client, who)
    status, body = await get(client, f"/api/v1/nodes/{node['node']['id']}/live", who)
    assert status == 200
    assert body["node"]["connected"] is False
    assert body["node"]["last_seen"] is None
    assert body["latest"] == []
    assert body["series"] == []
    assert body["alerts"] == []


@pytest.mark.parametrize(
    "query",
    [
        {"metric": "bad name"},
        {"metric": "x" * 65},
        {"metric": ",".join(f"m{i}" for i in range(51))},
        {"metric": ","},
        {"window": "60"},
    ],
)
async def test_malformed_live_queries_are_422(
    client: aiohttp.ClientSession, server: LiveServer, query: dict[str, str]
) -> None:
    who = await register(client)
    node = await create_node(client, who)
    status, body = await get(client, f"/api/v1/nodes/{node['node']['id']}/live", who, **query)
    assert status == 422
    assert body["error"]["field"] in {"metric", "window"}


async def test_series_are_at_most_300_points(
    client: aiohttp.ClientSession, server: LiveServer
) -> None:
    who = await register(client, plan="business")  # 1 s minimum interval
    node = await create_node(client, who)
    frame = Metrics(seq=0, ts=0.0, samples=[WireSample(m=f"m{i}", v=float(i)) for i in range(600)])
    outbox = Outbox()
    agent = agent_client(
        str(server.url), node["token"], outbox=outbox, hello_builder=lambda: hello(1)
    )
    async with running(agent):
        await eventually(lambda: agent.connected)
        for _ in range(3):
            agent.send_metrics(agent_metrics(frame))
            await eventually(lambda: server.app[LIVE].total_series >= 600)
            server.clock.advance(1)
    status, body = await get(client, f"/api/v1/nodes/{node['node']['id']}/live", who)
    assert status == 200
    assert len(body["series"]) == 600
    assert all(len(s["points"]) <= live_api.MAX_POINTS for s in body["series"])


def test_downsample() -> None:
    points: list[tuple[float, float | None]] = [(float(t), float(t)) for t in range(900)]
    points[0:3] = [(0.0, None), (1.0, None), (2.0, None)]
    out = downsample(points, 300)
    assert len(out) == 300
    assert out[0] == (2.0, None)
    assert out[1] == (5.0, 4.0)
    assert out[-1] == (899.0, 898.0)
    assert downsample(points[:10], 300) == points[:10]


def test_openapi_describes_exactly_these_routes() -> None:
    for module in (alerts_api, live_api):
        registered = {route.path for route in module.routes}
        assert set(module.OPENAPI) == registered
        for item in module.OPENAPI.values():
            assert "get" in item
            assert item["get"]["responses"]["200"]
