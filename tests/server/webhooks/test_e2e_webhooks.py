"""The whole path with real processes: the REAL agent process raises alerts, the REAL server
process (``oneconnect-server run`` on SQLite) delivers them to a loopback receiver — and is
killed with SIGKILL mid-delivery and started again. Nothing is lost, and a receiver deduping
on ``webhook-id`` sees every alert exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.agent.agent_process import AgentProcess
from tests.server.accounts_kit import create_node, register
from tests.server.webhooks.receiver import Receiver, Reply

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[3]
RULES = """
include_defaults = false

[[rule]]
name = "load_present"
metric = "load1"
op = ">="
threshold = 0
severity = "warning"
summary = "load is {value:.2f}"

[[rule]]
name = "cpu_count_present"
metric = "cpu_count"
op = ">="
threshold = 1
severity = "info"
summary = "{value:.0f} CPUs"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            "run",
            "--config",
            str(self.config),
            cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30), aiohttp.ClientSession() as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + "/readyz") as response:
                        if response.status == 200:
                            return
                assert self.proc.returncode is None, "the server exited at start"
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.communicate()

    async def stop(self) -> str:
        if self.proc is None:
            return ""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.wait_for(self.proc.communicate(), 15)
        except TimeoutError:
            self.proc.kill()
            _, err = await self.proc.communicate()
        return (err or b"").decode(errors="replace")


@contextlib.asynccontextmanager
async def server_process(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "oneconnect.db"}"\n'
        'webhook_allow_networks = ["127.0.0.0/8"]\n'
        "webhook_retry_base = 0.05\n"
        "webhook_retry_max = 0.3\n"
        "webhook_max_attempts = 20\n"
        "start_grace_seconds = 120\n"
    )
    srv = ServerProcess(config, port)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def test_agent_to_server_to_webhook_across_a_server_kill(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    agent: AgentProcess | None = None
    async with server_process(tmp_path) as srv, Receiver() as rx:
        try:
            async with aiohttp.ClientSession(base_url=srv.url) as session:
                who = await register(session, plan="business")
                node = await create_node(session, who, "e2e-node")
                async with session.post(
                    "/api/v1/webhooks", json={"url": rx.url()}, headers=who.headers
                ) as response:
                    hook: dict[str, Any] = await response.json()
                    assert response.status == 201, hook
            rx.default = Reply(503)  # the receiver is failing: deliveries are retried
            agent = await AgentProcess.start(
                env={
                    "ONECONNECT_AGENT_SERVER_URL": srv.url,
                    "ONECONNECT_AGENT_TOKEN": node["token"],
                    "ONECONNECT_AGENT_RULES": str(rules),
                }
            )
            await rx.wait_for(
                lambda got: len({r.verify(hook["secret"])["data"]["rule"] for r in got}) == 2,
                timeout=30,
            )
            await srv.kill()  # mid-delivery: nothing was acked to the agent
            before = {r.verify(hook["secret"])["data"]["id"]: r.webhook_id for r in rx.got}
            rx.default = Reply(204)
            await srv.start()  # the same port and database; memory starts empty
            await rx.wait_for(
                lambda got: {r.webhook_id for r in got if r.status == 204} >= set(before.values()),
                timeout=45,
            )
        finally:
            if agent is not None:
                assert await agent.stop() == 0, agent.stderr[-2000:]
    delivered = [r for r in rx.got if r.status == 204]
    payloads = [r.verify(hook["secret"]) for r in delivered]
    by_event = {p["data"]["id"]: r.webhook_id for p, r in zip(payloads, delivered, strict=True)}
    assert by_event.items() >= before.items()  # the same webhook-id before and after the kill
    webhook_ids = [r.webhook_id for r in delivered]
    assert len(webhook_ids) == len(set(webhook_ids))  # exactly once per id
    assert {p["data"]["rule"] for p in payloads} == {"load_present", "cpu_count_present"}
    assert all(p["data"]["node"]["name"] == "e2e-node" for p in payloads)
