"""Operational routes, the OpenAPI document's coverage, edge errors, and the server commands."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from server.app import ROUTE_MODULES, create_app, own_the_collector
from server.clock import FakeClock
from server.config import ServerSettings
from server.storage.store import Store
from tests.server.conftest import LiveServer, start_server

REPO = Path(__file__).resolve().parents[2]


async def test_healthz_and_readyz(client: aiohttp.ClientSession) -> None:
    async with client.get("/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
    async with client.get("/readyz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ready"}


async def test_metrics_is_prometheus_text(client: aiohttp.ClientSession) -> None:
    async with client.get("/healthz"):
        pass
    async with client.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    families = list(text_string_to_metric_families(text))
    assert all(f.name.startswith("oneconnect_server_") for f in families)


async def test_every_route_is_documented_and_every_documented_route_exists(
    server: LiveServer, client: aiohttp.ClientSession
) -> None:
    async with client.get("/api/v1/openapi.json") as response:
        assert response.status == 200
        spec = await response.json()
    assert spec["openapi"].startswith("3.1")
    documented = {
        (path, method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    registered = {
        (route.resource.canonical, route.method)
        for route in server.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert registered - documented == set(), "routes missing from openapi.json"
    assert documented - registered == set(), "openapi.json documents routes that don't exist"
    for module in ROUTE_MODULES:
        for item in module.OPENAPI.values():
            for method, operation in item.items():
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                assert operation.get("summary"), "every operation has a summary"
                assert operation.get("responses"), "every operation lists its responses"


async def test_unknown_route_and_method_are_json_errors(client: aiohttp.ClientSession) -> None:
    async with client.get("/api/v1/nope") as response:
        assert response.status == 404
        body = await response.json()
        assert body["error"]["code"] == "not_found"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    async with client.delete("/healthz") as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "method_not_allowed"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECONNECT_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


async def _run(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:  # noqa: ASYNC109
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_migrate_command_is_idempotent(tmp_path: Path) -> None:
    env = _env(ONECONNECT_SERVER_DATA_DIR=str(tmp_path / "data"))
    code, out, err = await _run("migrate", env=env)
    assert code == 0, err
    assert out.startswith("migrated: ")
    code, out, _ = await _run("migrate", env=env)
    assert code == 0
    assert out.strip() == "database is up to date"
    assert (tmp_path / "data" / "oneconnect.db").exists()


async def test_bad_server_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    code, _, err = await _run("run", env=_env(ONECONNECT_SERVER_LISTEN="nowhere"))
    assert code == 2
    assert "listen" in err


@pytest.mark.slow
async def test_demo_runs_the_whole_system_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "demo",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "demo"),
        "--interval",
        "1",
        env=_env(),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(45):
            while not any("demo_load_present" in line for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, "demo exited early"
                lines.append(line)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = "".join(lines) + out.decode()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert "Demo API key:   oc_key_" in text
    assert "Server / API:   http://127.0.0.1:" in text
    assert "[firing  ] info     demo_load_present on demo-vpn-node-1" in text
    assert "(signature ok)" in text  # it came as a signed webhook to the demo's sink
    assert "BAD SIGNATURE" not in text
    assert "Webhook sink:   http://127.0.0.1:" in text
    assert "(sign in: demo@example.com / " in text  # the dashboard is usable as the demo
    assert "demo stopped" in text


async def test_every_security_scheme_used_is_defined(client: aiohttp.ClientSession) -> None:
    async with client.get("/api/v1/openapi.json") as response:
        spec = await response.json()
    defined = set(spec["components"]["securitySchemes"])
    used = {
        name
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
        for requirement in operation.get("security", [])
        for name in requirement
    }
    assert used <= defined


async def test_a_process_running_the_app_alone_tunes_the_collector_and_gets_it_back(
    settings: ServerSettings, store: Store, clock: FakeClock
) -> None:
    """``run`` and ``demo`` own their process: once started, the app freezes start-up objects
    and spaces collections out; stopped, the process gets its collector back. A bare
    ``create_app`` (many apps in one process, as here) leaves the collector alone."""
    gc.set_threshold(700, 10, 10)
    assert gc.get_freeze_count() == 0
    _live, runner = await start_server(settings, store, clock)
    try:
        assert gc.get_threshold() == (700, 10, 10)
        assert gc.get_freeze_count() == 0
    finally:
        await runner.cleanup()
    runner = web.AppRunner(own_the_collector(create_app(settings, store=store, clock=clock)))
    await runner.setup()
    try:
        assert gc.get_threshold() == (50_000, 20, 100)
        assert gc.get_freeze_count() > 0
    finally:
        await runner.cleanup()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
