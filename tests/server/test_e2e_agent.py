"""The REAL agent process against the real server app on 127.0.0.1 (real clock, real store):
its alert shows in GET /api/v1/alerts and its metrics in /live; the server is then stopped
and restarted on the same port, and the agent reconnects and resends the event it raised
while the server was away — once — while the alert acked before the restart, still firing,
is current again at once: its hello named it."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.clock import SystemClock
from server.keys import STATS
from server.storage.store import Store
from tests.agent.agent_process import FIRING_RULES, AgentProcess
from tests.server.accounts_kit import Registered, create_node, register
from tests.server.streamkit import ServerUnderTest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SECOND_RULE = """
[[rule]]
name = "load_present_again"
metric = "load1"
op = ">="
threshold = 0
severity = "warning"
summary = "load is still {value:.2f}"
"""


async def api(session: aiohttp.ClientSession, url: str, who: Registered) -> dict[str, Any]:
    async with session.get(url, headers=who.headers) as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return body


async def poll(
    session: aiohttp.ClientSession,
    url: str,
    who: Registered,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 30.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """GET ``url`` until ``done(body)``, bounded in time (the agent runs on its own clock)."""
    async with asyncio.timeout(timeout):
        while True:
            body = await api(session, url, who)
            if done(body):
                return body
            await asyncio.sleep(0.25)


def points(body: dict[str, Any], metric: str) -> int:
    """Non-gap points of ``metric``'s series in a /live body."""
    return sum(
        p[1] is not None for s in body["series"] if s["metric"] == metric for p in s["points"]
    )


def rules(body: dict[str, Any], status: str = "firing") -> list[str]:
    return [a["rule"] for a in body["alerts"] if a["status"] == status]


async def test_real_agent_end_to_end_across_a_server_restart(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    srv = ServerUnderTest(store, SystemClock(), start_grace_seconds=60)
    await srv.start()
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(FIRING_RULES)
    agent: AgentProcess | None = None
    try:
        async with aiohttp.ClientSession(base_url=srv.url) as session:
            who = await register(session, plan="business")  # 1 s minimum interval
            created = await create_node(session, who, "e2e-node")
            node_id, token = created["node"]["id"], created["token"]
            agent = await AgentProcess.start(
                env={
                    "ONECONNECT_AGENT_SERVER_URL": srv.url,
                    "ONECONNECT_AGENT_TOKEN": token,
                    "ONECONNECT_AGENT_RULES": str(rules_file),
                    "ONECONNECT_AGENT_INTERVAL": "1",
                }
            )
            alerts_url = "/api/v1/alerts"
            live_url = f"/api/v1/nodes/{node_id}/live"
            body = await poll(session, alerts_url, who, lambda b: "load_present" in rules(b))
            (alert,) = body["alerts"]
            assert alert["node_id"] == node_id
            assert alert["node_name"] == "e2e-node"
            assert alert["severity"] == "info"
            assert alert["summary"].startswith("load is ")
            live = await poll(
                session,
                live_url,
                who,
                lambda b: points(b, "load1") >= 2 and points(b, "cpu_usage_percent") >= 1,
            )
            assert live["node"]["connected"]
            assert live["node"]["interval"] == 1.0
            assert live["node"]["agent_version"]
            latest = {x["metric"] for x in live["latest"]}
            assert {"load1", "cpu_usage_percent"} <= latest

        # The server goes away; meanwhile the agent raises a new alert it cannot deliver.
        await srv.stop()
        rules_file.write_text(FIRING_RULES + SECOND_RULE)
        agent.signal(signal.SIGHUP)
        await asyncio.sleep(3)  # a few agent cycles: the new rule fires into the outbox
        await srv.start()  # same port, a fresh app: empty live state, the same store

        async with aiohttp.ClientSession(base_url=srv.url) as session:
            body = await poll(
                session, alerts_url, who, lambda b: "load_present_again" in rules(b), timeout=60
            )
            assert rules(body).count("load_present_again") == 1
            # Acked before the restart and still firing: the fresh server knows it from the
            # hello, with its first start time, as one alert (not a new one).
            (again,) = [a for a in body["alerts"] if a["rule"] == "load_present"]
            assert again["started_at"] == alert["started_at"]
            assert again["id"] == alert["id"]
            live = await poll(session, live_url, who, lambda b: b["node"]["connected"])
            ids = [e.id for e in srv.live.recent_events(node_id)]
            assert len(ids) == len(set(ids))
            assert srv.app is not None
            assert srv.app[STATS].value("alert_events_duplicate") == 0
        code = await agent.stop()
        assert code == 0, agent.stderr[-2000:]
        # It was raised while the server was away, so it reached the server as a resend.
        raised = agent.stderr.index("alert firing load_present_again")
        assert raised < agent.stderr.rindex("stream connected to"), agent.stderr[-3000:]
    finally:
        if agent is not None:
            await agent.kill()
        await srv.stop()
    server_logs = "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(("oneconnect.server", "aiohttp"))
    )
    assert token not in server_logs
    assert who.api_key not in server_logs
    assert "127.0.0.1" not in server_logs
