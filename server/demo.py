"""``oneconnect-server demo``: the whole system on this machine, stopped with Ctrl-C.

A server on SQLite under a local data directory (fresh each run), a demo account and node
created through the real API, a real agent process streaming this machine's health to it, and
a local webhook sink — a small receiver on 127.0.0.1, registered as the account's webhook
endpoint — that checks each delivery's Standard Webhooks signature and prints the alert.
Nothing here is simulated: alerts take the same path (agent → server → signed webhook) as in
production; the demo's server exempts loopback from the SSRF block so its sink is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web

from server.app import create_app, own_the_collector
from server.config import exact_settings
from server.webhooks.signing import signature

DEMO_RULES = """\
# Written by `oneconnect-server demo`: the built-in rules plus one that always fires.
include_defaults = true

[[rule]]
name = "demo_load_present"
metric = "load1"
op = ">="
threshold = 0
for = "4s"
severity = "info"
summary = "Demo: 1-minute load is {value:.2f} (this rule always fires)"
"""


def _fresh(data_dir: Path) -> Path:
    """A fresh demo data directory (absolute): no database from a previous run, the rules."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("oneconnect.db", "oneconnect.db-wal", "oneconnect.db-shm"):
        with contextlib.suppress(FileNotFoundError):
            (data_dir / name).unlink()
    (data_dir / "demo-rules.toml").write_text(DEMO_RULES)
    return data_dir


async def _call(
    http: ClientSession, method: str, where: str, key: str | None = None, **body: Any
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.request(method, where, json=body or None, headers=headers) as response:
        data: dict[str, Any] = await response.json()
        if response.status >= 400:
            raise RuntimeError(f"{method} {where}: {response.status} {data}")
        return data


def _show(payload: dict[str, Any], verified: bool) -> str:
    alert = payload.get("data") or {}
    node = alert.get("node") or {}
    mark = "signature ok" if verified else "BAD SIGNATURE"
    return (
        f"  [{alert.get('status', '?'):8}] {alert.get('severity', '?'):8} "
        f"{alert.get('rule', '?')} on {node.get('name') or node.get('id', '?')}: "
        f"{alert.get('summary', '')}  ({mark})"
    )


class Sink:
    """The demo's webhook receiver: verifies, prints, answers 204 (or 401 if unsigned)."""

    def __init__(self) -> None:
        self.secret = ""
        self.seen: set[str] = set()

    def verified(self, request: web.Request, body: bytes) -> bool:
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        if not (self.secret and msg_id and stamp.isdigit()):
            return False
        try:
            expected = signature(self.secret, msg_id, int(stamp), body)
        except ValueError:
            return False
        offered = request.headers.get("webhook-signature", "").split()
        return any(hmac.compare_digest(expected, sig) for sig in offered)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = self.verified(request, body)
        msg_id = request.headers.get("webhook-id", "")
        if msg_id not in self.seen:  # a receiver dedupes on webhook-id
            self.seen.add(msg_id)
            with contextlib.suppress(ValueError):
                print(_show(json.loads(body), ok), flush=True)
        return web.Response(status=204 if ok else 401)


async def _start_sink(sink: Sink) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/webhook", sink.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, f"http://127.0.0.1:{port}/webhook"


async def run_demo(data_dir: Path, *, port: int = 8080, interval: float = 2.0) -> int:
    data_dir = _fresh(data_dir)
    settings = exact_settings(
        listen=f"127.0.0.1:{port}",
        data_dir=str(data_dir),
        start_grace_seconds=10,
        webhook_allow_networks=["127.0.0.0/8", "::1/128"],
    )
    app = own_the_collector(create_app(settings))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(
            f"oneconnect-server demo: cannot listen on 127.0.0.1:{port}: {exc.strerror}"
            " (use --port 0 for any free port)",
            file=sys.stderr,
        )
        return 2
    sockets = getattr(site._server, "sockets", None) or []
    port = int(sockets[0].getsockname()[1]) if sockets else port
    base = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    agent: asyncio.subprocess.Process | None = None
    sink = Sink()
    sink_runner, sink_url = await _start_sink(sink)
    password = secrets.token_urlsafe(12)  # this run's demo login, printed below
    try:
        async with ClientSession() as http:
            created = await _call(
                http,
                "POST",
                f"{base}/api/v1/accounts",
                name="Demo Developer",
                email="demo@example.com",
                company="OneConnect demo",
                password=password,
                plan="business",
            )
            key = str(created["api_key"])
            node = await _call(http, "POST", f"{base}/api/v1/nodes", key, name="demo-vpn-node-1")
            hook = await _call(
                http, "POST", f"{base}/api/v1/webhooks", key, url=sink_url, name="demo sink"
            )
            sink.secret = str(hook["secret"])
            rules = data_dir / "demo-rules.toml"
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("ONECONNECT_AGENT_")},
                "PYTHONDONTWRITEBYTECODE": "1",
                "ONECONNECT_AGENT_SERVER_URL": base,
                "ONECONNECT_AGENT_TOKEN": str(node["token"]),
                "ONECONNECT_AGENT_INTERVAL": str(interval),
                "ONECONNECT_AGENT_RULES": str(rules),
            }
            agent = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent.cli", "run", env=env
            )
            print(
                "\n".join(
                    [
                        "",
                        "OneConnect Alert demo is running (Ctrl-C stops everything).",
                        f"  Dashboard:      {base}/  (sign in: demo@example.com / {password})",
                        f"  Server / API:   {base}/api/v1  (OpenAPI: {base}/api/v1/openapi.json)",
                        f"  Demo API key:   {key}",
                        f"  Demo node:      {node['node']['name']} ({node['node']['id']}), "
                        f"agent pid {agent.pid}, interval {interval:g} s",
                        f"  Try:            curl -s -H 'Authorization: Bearer {key}' "
                        f"{base}/api/v1/alerts",
                        f"  Webhook sink:   {sink_url} (generic format, Standard Webhooks "
                        "signatures checked)",
                        f"  Data directory: {data_dir} (accounts, nodes and endpoints only; "
                        "monitored data stays in memory)",
                        "Alerts delivered to the webhook sink:",
                    ]
                ),
                flush=True,
            )
            await stop.wait()
    finally:
        if agent is not None and agent.returncode is None:
            agent.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(agent.wait(), timeout=10)
            except TimeoutError:
                agent.kill()
                await agent.wait()
        await runner.cleanup()
        await sink_runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("demo stopped", flush=True)
    return 0
