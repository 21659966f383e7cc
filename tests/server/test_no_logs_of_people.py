"""No logs of people: over a whole run of the real server process and a real agent process,
no log line (of either, at debug level, with the access log on) holds an API key, a node token,
a session id, a password, an e-mail address or a client address."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.agent.agent_process import FIRING_RULES, AgentProcess

pytestmark = pytest.mark.slow
PASSWORD = "a long and secret passphrase 42"
EMAIL = "person-under-test@example.com"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_whole_run_logs_hold_no_secret_and_no_person(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECONNECT_")}
    env.update(
        PYTHONDONTWRITEBYTECODE="1",
        ONECONNECT_SERVER_LISTEN=f"127.0.0.1:{port}",
        ONECONNECT_SERVER_DATA_DIR=str(tmp_path / "data"),
        ONECONNECT_SERVER_LOG_LEVEL="debug",
        ONECONNECT_SERVER_ACCESS_LOG="true",
    )
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    secrets: list[str] = [PASSWORD, EMAIL]
    agent: AgentProcess | None = None
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        async with http.get(f"{base}/readyz") as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.2)
            async with http.post(
                f"{base}/api/v1/accounts",
                json={"name": "Dev", "email": EMAIL, "password": PASSWORD, "plan": "business"},
            ) as response:
                assert response.status == 201
                key = (await response.json())["api_key"]
            secrets.append(key)
            headers = {"Authorization": f"Bearer {key}"}
            async with http.post(
                f"{base}/api/v1/nodes", json={"name": "n1"}, headers=headers
            ) as response:
                token = (await response.json())["token"]
            secrets.append(token)
            async with http.post(
                f"{base}/api/v1/session", json={"email": EMAIL, "password": PASSWORD}
            ) as response:
                assert response.status == 200
                secrets.append((await response.json())["csrf_token"])
            secrets += [c.value for c in http.cookie_jar]
            async with http.post(
                f"{base}/api/v1/session", json={"email": EMAIL, "password": "wrong " + PASSWORD}
            ) as response:
                assert response.status == 401
            async with http.get(
                f"{base}/api/v1/alerts", headers={"Authorization": "Bearer oc_key_wrongwrong"}
            ) as response:
                assert response.status == 401
            rules = tmp_path / "rules.toml"
            rules.write_text(FIRING_RULES)
            agent = await AgentProcess.start(
                env={
                    "ONECONNECT_AGENT_SERVER_URL": base,
                    "ONECONNECT_AGENT_TOKEN": token,
                    "ONECONNECT_AGENT_RULES": str(rules),
                    "ONECONNECT_AGENT_LOG_LEVEL": "debug",
                }
            )
            async with asyncio.timeout(30):
                while True:
                    async with http.get(f"{base}/api/v1/alerts", headers=headers) as response:
                        if (await response.json())["alerts"]:
                            break
                    await asyncio.sleep(0.5)
    finally:
        if agent is not None:
            assert await agent.stop() == 0
        server.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(server.communicate(), 30)
    logs = out.decode() + err.decode() + (agent.stderr + agent.stdout if agent else "")
    assert "GET /api/v1/alerts" in logs, "the access log was on and captured"
    leaked = [s[:12] + "…" for s in secrets if s and s in logs]
    assert leaked == []
    assert "127.0.0.1:" not in logs.replace(f"127.0.0.1:{port}", ""), "no client address"
