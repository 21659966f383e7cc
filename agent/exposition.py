"""Optional Prometheus text exposition of the latest gated samples on ``metrics_listen``.

It serves only what has passed the privacy gate (the agent hands it gated samples); coarsened
counts ("<5") have no numeric form and are left out. Off unless ``metrics_listen`` is set.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from agent.metrics import METRICS
from agent.wire import WireSample

PREFIX = "oneconnect_node_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def render(samples: Sequence[WireSample]) -> str:
    """Prometheus text format 0.0.4, grouped by metric with HELP and TYPE from the table."""
    by_metric: dict[str, list[WireSample]] = {}
    for sample in samples:
        if isinstance(sample.v, float) and sample.m in METRICS:
            by_metric.setdefault(sample.m, []).append(sample)
    lines: list[str] = []
    for name in sorted(by_metric):
        definition = METRICS[name]
        full = PREFIX + name
        lines.append(f"# HELP {full} {_help(definition.description)} ({definition.unit})")
        lines.append(f"# TYPE {full} {definition.kind}")
        for sample in by_metric[name]:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.l.items()))
            lines.append(f"{full}{{{labels}}} {sample.v!r}" if labels else f"{full} {sample.v!r}")
    return "\n".join(lines) + "\n"


class Exposition:
    """Holds the latest gated samples; serves them at GET /metrics."""

    def __init__(self) -> None:
        self._text = "\n"
        self._runner: web.AppRunner | None = None

    def update(self, gated: Sequence[WireSample]) -> None:
        self._text = render(gated)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._text.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def start(self, host: str, port: int) -> int:
        app = web.Application(client_max_size=1024)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
