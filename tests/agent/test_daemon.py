"""The real agent process against a fake server on loopback: stream, signals, systemd notify,
Prometheus exposition, `check` and `validate`, logs."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path

import aiohttp
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.protocol import Alert, Metrics
from tests.agent.agent_process import FIRING_RULES, AgentProcess
from tests.agent.fake_server import FakeServer

pytestmark = pytest.mark.slow
TOKEN = "node-token-for-tests-0123456789"


def rules_file(tmp_path: Path, text: str = FIRING_RULES) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


def stream_env(server: FakeServer, rules: Path, **extra: str) -> dict[str, str]:
    return {
        "ONECONNECT_AGENT_SERVER_URL": server.url,
        "ONECONNECT_AGENT_TOKEN": TOKEN,
        "ONECONNECT_AGENT_RULES": str(rules),
        **extra,
    }


def this_hosts_identifiers() -> set[str]:
    """This machine's own addresses and MACs: none may appear in anything the agent sends."""
    found = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            value = address.address.split("%")[0]
            if value and value not in ("127.0.0.1", "::1", "00:00:00:00:00:00"):
                found.add(value.lower())
    return found


async def test_stream_end_to_end(tmp_path: Path) -> None:
    async with FakeServer(token=TOKEN) as server:
        agent = await AgentProcess.start(env=stream_env(server, rules_file(tmp_path)))
        try:
            await server.wait_for(lambda: len(server.metrics()) >= 3, timeout=15)
            await server.wait_for(lambda: len(server.alerts()) >= 1, timeout=10)
        finally:
            code = await agent.stop()
        assert code == 0, agent.stderr
    first = server.received[0]
    assert first.type == "hello"
    assert server.connections[0].headers["Authorization"] == f"Bearer {TOKEN}"
    alert = server.alerts()[0].event
    assert alert.rule == "load_present"
    assert alert.status == "firing"
    assert alert.id in server.acked
    names = {s.m for frame in server.metrics() for s in frame.samples}
    assert {"cpu_usage_percent", "memory_available_percent", "load1"} <= names
    wire = "\n".join(m.model_dump_json() for m in server.received).lower()
    leaks = {ident for ident in this_hosts_identifiers() if ident in wire}
    assert leaks == set(), f"host identifiers on the wire: {leaks}"
    logs = agent.stderr.lower()
    assert {ident for ident in this_hosts_identifiers() if ident in logs} == set()
    assert TOKEN not in agent.stderr
    assert TOKEN not in agent.stdout


async def test_config_pushed_by_the_server_is_validated_then_applied(tmp_path: Path) -> None:
    async with FakeServer(token=TOKEN) as server:
        agent = await AgentProcess.start(
            env=stream_env(server, rules_file(tmp_path, "include_defaults = false\n"))
        )
        try:
            await server.wait_for(lambda: len(server.metrics()) >= 1, timeout=15)
            bad = {"v": 1, "type": "config", "rules": [{"name": "x", "metric": "no_such"}]}
            await server.send_raw(json.dumps(bad))
            good = {
                "v": 1,
                "type": "config",
                "interval": 2,
                "rules": [
                    {"name": "pushed", "metric": "load1", "op": ">=", "threshold": 0},
                ],
            }
            await server.send_raw(json.dumps(good))
            await server.wait_for(lambda: len(server.alerts()) >= 1, timeout=10)
        finally:
            code = await agent.stop()
    assert code == 0
    assert server.alerts()[0].event.rule == "pushed"
    assert "server pushed invalid rules, keeping the current rules" in agent.stderr
    assert "no_such" in agent.stderr
    assert "interval set by the server: 2.0s" in agent.stderr


async def test_sigterm_drains_unacked_alerts_then_exits_zero(tmp_path: Path) -> None:
    async with FakeServer(token=TOKEN, auto_ack=False) as server:
        agent = await AgentProcess.start(env=stream_env(server, rules_file(tmp_path)))
        await server.wait_for(lambda: len(server.alerts()) >= 1, timeout=15)
        loop = asyncio.get_running_loop()
        started = loop.time()
        agent.signal(signal.SIGTERM)
        code = await agent.wait(15)
        elapsed = loop.time() - started
    assert code == 0
    assert 4.0 <= elapsed < 10.0, "tries the outbox for about 5 s, then exits"
    assert "not acked" in agent.stderr


async def test_sigterm_exits_as_soon_as_the_outbox_is_acked(tmp_path: Path) -> None:
    async with FakeServer(token=TOKEN, auto_ack=False) as server:
        agent = await AgentProcess.start(env=stream_env(server, rules_file(tmp_path)))
        await server.wait_for(lambda: len(server.alerts()) >= 1, timeout=15)
        agent.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        await server.ack([a.event.id for a in server.alerts()])
        code = await agent.wait(4)
    assert code == 0
    assert "not acked" not in agent.stderr


async def test_sighup_reloads_rules_and_keeps_them_when_invalid(tmp_path: Path) -> None:
    rules = rules_file(tmp_path, "include_defaults = false\n")
    async with FakeServer(token=TOKEN) as server:
        agent = await AgentProcess.start(env=stream_env(server, rules))
        try:
            await server.wait_for(lambda: len(server.metrics()) >= 1, timeout=15)
            rules.write_text("this is = not toml [")
            agent.signal(signal.SIGHUP)
            await asyncio.sleep(1.5)
            rules.write_text(FIRING_RULES)
            agent.signal(signal.SIGHUP)
            await server.wait_for(lambda: len(server.alerts()) >= 1, timeout=10)
        finally:
            code = await agent.stop()
    assert code == 0
    assert "rules reload failed, keeping the current rules" in agent.stderr
    assert "rules reloaded" in agent.stderr


async def test_hostile_server_does_not_crash_the_agent(tmp_path: Path) -> None:
    async with FakeServer(token=TOKEN) as server:
        agent = await AgentProcess.start(env=stream_env(server, rules_file(tmp_path)))
        try:
            await server.wait_for(lambda: len(server.metrics()) >= 1, timeout=15)
            for raw in (
                "nonsense",
                "[]",
                '{"v":1,"type":"config","rules":[{"name":5}]}',
                '{"v":1,"type":"ack","ids":["../../x"]}',
                "{" * 5000,
            ):
                await server.send_raw(raw)
            count = len(server.metrics())
            await server.wait_for(lambda: len(server.metrics()) >= count + 2, timeout=10)
        finally:
            code = await agent.stop()
        assert agent.proc.returncode == 0
        assert code == 0
    assert "Traceback" not in agent.stderr


async def test_systemd_ready_and_watchdog(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    agent = await AgentProcess.start(
        env={
            "NOTIFY_SOCKET": str(path),
            "WATCHDOG_USEC": "1000000",
            "ONECONNECT_AGENT_RULES": str(rules_file(tmp_path, "include_defaults = false\n")),
        }
    )
    received: list[str] = []
    try:
        async with asyncio.timeout(15):
            while received.count("WATCHDOG=1") < 2:
                received.append((await loop.sock_recv(sock, 256)).decode())
    finally:
        code = await agent.stop()
        sock.close()
    assert received[0] in ("READY=1", "WATCHDOG=1")
    assert "READY=1" in received
    assert code == 0


async def test_prometheus_exposition_parses(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = await AgentProcess.start(
        env={
            "ONECONNECT_AGENT_METRICS_LISTEN": str(port),
            "ONECONNECT_AGENT_RULES": str(rules_file(tmp_path)),
        }
    )
    try:
        async with aiohttp.ClientSession() as session:
            text = ""
            for _ in range(50):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        text = await response.text()
                        content_type = response.headers["Content-Type"]
                    if "oneconnect_node_load1" in text:
                        break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)
    finally:
        code = await agent.stop()
    assert code == 0
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "oneconnect_node_load1" in families
    assert families["oneconnect_node_cpu_count"].samples[0].value >= 1
    # Standalone mode prints the firing alert as a JSON line on stdout.
    event = Alert.model_validate_json(agent.stdout.splitlines()[0]).event
    assert event.rule == "load_present"


async def test_json_logs(tmp_path: Path) -> None:
    agent = await AgentProcess.start(
        env={
            "ONECONNECT_AGENT_LOG_FORMAT": "json",
            "ONECONNECT_AGENT_RULES": str(rules_file(tmp_path)),
        }
    )
    await asyncio.sleep(2.5)
    assert await agent.stop() == 0
    lines = [json.loads(line) for line in agent.stderr.splitlines() if line.strip()]
    assert lines
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert any("started" in line["msg"] for line in lines)


async def test_check_prints_what_one_cycle_sends(tmp_path: Path) -> None:
    agent = await AgentProcess.start(
        "check", "--settle", "0.5", env={"ONECONNECT_AGENT_RULES": str(rules_file(tmp_path))}
    )
    assert await agent.wait(30) == 0, agent.stderr
    result = json.loads(agent.stdout)
    kinds = [m["type"] for m in result["messages"]]
    assert kinds[:2] == ["hello", "metrics"]
    assert "alert" in kinds
    frame = Metrics.model_validate(result["messages"][1])
    assert any(s.m == "cpu_usage_percent" for s in frame.samples)
    assert result["buffer_bound_bytes"] > 0


async def test_validate_names_file_rule_and_field(tmp_path: Path) -> None:
    bad = rules_file(
        tmp_path, '[[rule]]\nname = "x"\nmetric = "load1"\nop = ">"\nthreshold = "high"\n'
    )
    agent = await AgentProcess.start("validate", "--rules", str(bad))
    assert await agent.wait(30) == 2
    assert str(bad) in agent.stderr
    assert '"x"' in agent.stderr
    assert "threshold" in agent.stderr
    good = await AgentProcess.start("validate", "--rules", str(rules_file(tmp_path)))
    assert await good.wait(30) == 0
    assert "rules OK" in good.stdout


async def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    agent = await AgentProcess.start("run", env={"ONECONNECT_AGENT_INTERVAL": "fast"})
    assert await agent.wait(30) == 2
    assert "interval" in agent.stderr
    missing_token = await AgentProcess.start(
        "run", env={"ONECONNECT_AGENT_SERVER_URL": "http://127.0.0.1:9"}
    )
    assert await missing_token.wait(30) == 2
    assert "token" in missing_token.stderr


async def test_sighup_is_handled_at_once_even_with_a_long_interval(tmp_path: Path) -> None:
    rules = rules_file(tmp_path, "include_defaults = false\n")
    async with FakeServer(token=TOKEN) as server:
        agent = await AgentProcess.start(
            env={**stream_env(server, rules), "ONECONNECT_AGENT_INTERVAL": "600"}
        )
        try:
            await server.wait_for(lambda: len(server.metrics()) >= 1, timeout=15)
            rules.write_text(FIRING_RULES)
            agent.signal(signal.SIGHUP)
            # The reload wakes the 10-minute wait: the new rule fires within seconds.
            await server.wait_for(lambda: len(server.alerts()) >= 1, timeout=10)
        finally:
            code = await agent.stop()
    assert code == 0


async def test_busy_metrics_port_exits_2_with_a_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        agent = await AgentProcess.start(env={"ONECONNECT_AGENT_METRICS_LISTEN": str(port)})
        assert await agent.wait(30) == 2
    assert f"metrics_listen 127.0.0.1:{port}: cannot listen" in agent.stderr
    assert "Traceback" not in agent.stderr


async def test_validate_checks_what_run_checks() -> None:
    agent = await AgentProcess.start(
        "validate", env={"ONECONNECT_AGENT_SERVER_URL": "http://127.0.0.1:9"}
    )
    assert await agent.wait(30) == 2
    assert "token is required" in agent.stderr
