"""The application factory: one aiohttp app, typed keys, background work in cleanup contexts.

    app = create_app(settings)            # storage opened (and migrated) on startup
    web.run_app(app, ...)                 # or AppRunner in tests and the demo

Module map (each small, one role): ``api/`` HTTP routes by resource, ``ingest`` the agents'
websocket, ``live`` the in-memory live state, ``dispatch`` alert events → (later) webhooks,
``nodedown`` the silent-node detector, ``storage/`` accounts and nodes (SQLite or PostgreSQL).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from server import ingest, nodedown
from server.api import accounts, alerts, live, meta, nodes
from server.clock import Clock, SystemClock
from server.config import ServerSettings
from server.dispatch import Dispatcher
from server.keys import CLOCK, DISPATCH, LIMITER, LIVE, SETTINGS, STARTED_AT, STATS, STORE
from server.live import LiveState
from server.middleware import errors_middleware
from server.ratelimit import RateLimiter
from server.stats import Stats
from server.storage.migrate import migrate
from server.storage.store import Store

log = logging.getLogger("oneconnect.server")

ROUTE_MODULES = (meta, accounts, nodes, alerts, live, ingest)
"""Every module that registers routes; each has ``routes`` and ``OPENAPI`` (its paths)."""


def create_app(
    settings: ServerSettings,
    *,
    clock: Clock | None = None,
    store: Store | None = None,
) -> web.Application:
    """Build the app. ``store`` lets a test share one already-open store; otherwise the app
    opens (and, with ``migrate_on_start``, migrates) ``settings.db_url()`` on startup."""
    clock = clock or SystemClock()
    app = web.Application(
        middlewares=[errors_middleware],
        client_max_size=settings.max_body_bytes,
        handler_args={"max_field_size": 16 * 1024, "max_line_size": 16 * 1024},
    )
    stats = Stats()
    live = LiveState(window_seconds=settings.live_window_seconds, clock=clock)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[STATS] = stats
    app[LIMITER] = RateLimiter(clock=clock)
    app[LIVE] = live
    app[DISPATCH] = Dispatcher(live=live, stats=stats)
    app[ingest.SOCKETS] = ingest.AgentSockets(stats)
    app[STARTED_AT] = clock.monotonic()
    app.cleanup_ctx.append(_storage(settings, store))
    app.cleanup_ctx.append(nodedown.detector)
    app.on_shutdown.append(ingest.close_all)
    for module in ROUTE_MODULES:
        app.router.add_routes(module.routes)
    return app


def openapi_paths() -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for module in ROUTE_MODULES:
        for path, operations in module.OPENAPI.items():
            paths.setdefault(path, {}).update(operations)
    return paths


def _storage(
    settings: ServerSettings, shared: Store | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if shared is not None:
            app[STORE] = shared
            yield
            return
        url = settings.db_url()
        if url.startswith("sqlite"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.migrate_on_start:
            applied = await migrate(url)
            if applied:
                log.info("database migrated: %s", ", ".join(applied))
        store = await Store.open(url)
        app[STORE] = store
        try:
            yield
        finally:
            await store.close()

    return ctx
