"""The application factory: one aiohttp app, typed keys, background work in cleanup contexts.

    app = create_app(settings)            # storage opened (and migrated) on startup
    web.run_app(app, ...)                 # or AppRunner in tests and the demo

Module map (each small, one role): ``api/`` HTTP routes by resource, ``ingest`` the agents'
websocket, ``live`` the in-memory live state, ``dispatch`` alert events → sinks, ``webhooks/`` the
webhook sink and delivery, ``nodedown`` the silent-node detector, ``storage/`` accounts, nodes
and endpoints (SQLite or PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

from aiohttp import web

from server import fleet as fleet_streams, ingest, nodedown
from server.api import (
    accounts,
    alerts,
    dashboard,
    fleet,
    history,
    live,
    meta,
    nodes,
    rights,
    webhooks,
)
from server.clock import Clock, SystemClock
from server.config import ServerSettings
from server.dispatch import Dispatcher
from server.keys import (
    CLOCK,
    DISPATCH,
    LIMITER,
    LIVE,
    SAVED,
    SETTINGS,
    STARTED_AT,
    STATS,
    STORE,
    WEBHOOKS,
)
from server.live import LiveState
from server.middleware import errors_middleware
from server.ratelimit import RateLimiter
from server.saved import SavedMonitoring
from server.stats import Stats
from server.storage.migrate import migrate
from server.storage.store import Store
from server.storage.webhooks import WebhookEndpoint
from server.webhooks.client import WebhookClient
from server.webhooks.delivery import DeliveryEngine
from server.webhooks.dispatch import WebhookDispatch
from server.webhooks.retry import RetryPolicy

log = logging.getLogger("oneconnect.server")

ROUTE_MODULES = (
    meta,
    accounts,
    rights,
    nodes,
    webhooks,
    alerts,
    history,
    live,
    ingest,
    fleet,
    dashboard,
)
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
    app[rights.CONSENT_LISTENERS] = []
    app[ingest.SOCKETS] = ingest.AgentSockets(stats)
    app[STARTED_AT] = clock.monotonic()
    app.cleanup_ctx.append(_storage(settings, store))
    app.cleanup_ctx.append(_saved)
    app.cleanup_ctx.append(_webhooks)
    app.cleanup_ctx.append(nodedown.detector)
    app.on_shutdown.append(ingest.close_all)
    app.on_shutdown.append(fleet_streams.close_streams)
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


async def _saved(app: web.Application) -> AsyncIterator[None]:
    """Saved monitoring: the consents in memory, alert history as a dispatch sink, the
    writer and retention job in the background, a final flush at shutdown."""
    saved = SavedMonitoring(app[STORE], app[CLOCK], app[STATS])
    await saved.load()
    app[SAVED] = saved
    app[rights.CONSENT_LISTENERS].append(saved.consent_changed)
    app[DISPATCH].sinks.append(saved.alert)
    job = asyncio.create_task(saved.run())
    try:
        yield
    finally:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
        await saved.close()


def own_the_collector(app: web.Application) -> web.Application:
    """For a process that runs this app alone (``oneconnect-server run`` and ``demo``): once
    start-up is done, tune the process's cyclic garbage collector for it
    (:func:`tuned_collector`). ``create_app`` leaves the collector alone, so a process running
    many apps one after the other (the tests) does not pay a full collection for each."""
    app.cleanup_ctx.append(_frozen)  # the last context: everything else has started
    return app


async def _frozen(app: web.Application) -> AsyncIterator[None]:
    with tuned_collector():
        yield


GC_THRESHOLDS: Final = (50_000, 20, 100)
"""Young collections far apart: live state and 5,000 sockets make each full pass costly
(0.55-0.62 s at 5,000 agents measured); fewer passes, same reclaiming."""


@contextlib.contextmanager
def tuned_collector() -> Iterator[None]:
    """The server's collector policy, from now until the block ends (then the process gets
    its collector back). Everything alive now moves out of the cyclic collector's way: full
    collections then walk only what requests create (halves a 30-day history query), and
    collections run less often (bench/ingest at 5,000 agents: p50 from ~0.8 s to ms).
    ``oneconnect-server run`` and ``demo`` enter it once start-up is done; benchmarks enter it
    to measure as the server runs."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    """The webhook sink (and resync learner) on the dispatcher, its delivery engine and the
    reminder loop."""
    settings, store, clock = app[SETTINGS], app[STORE], app[CLOCK]
    client = WebhookClient(
        allow=settings.allow_networks(),
        connect_timeout=settings.webhook_connect_timeout,
        total_timeout=settings.webhook_timeout,
    )

    async def disable(endpoint: WebhookEndpoint, reason: str) -> None:
        await store.disable_webhook(endpoint.id, reason=reason, now=clock.time())
        sink.invalidate(endpoint.account_id)

    engine = DeliveryEngine(
        client,
        stats=app[STATS],
        clock=clock,
        disable=disable,
        policy=RetryPolicy(
            max_attempts=settings.webhook_max_attempts,
            base=settings.webhook_retry_base,
            max_delay=settings.webhook_retry_max,
        ),
        concurrency=settings.webhook_concurrency,
        queue_limit=settings.webhook_queue_limit,
        unhealthy_after=settings.webhook_unhealthy_after,
        disable_after=settings.webhook_disable_after,
    )
    sink = WebhookDispatch(
        store,
        engine,
        app[LIVE],
        clock,
        public_url=settings.public_url,
        repeat_interval=settings.webhook_repeat_interval,
    )
    sink.saved = app[SAVED]
    engine.on_attempt.append(app[SAVED].attempt)
    app[WEBHOOKS] = sink
    app[DISPATCH].sinks.append(sink)
    app[DISPATCH].learners.append(sink.learn)
    await sink.resume()
    reminders = asyncio.create_task(sink.run_reminders())
    try:
        yield
    finally:
        reminders.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reminders
        await app[DISPATCH].close()
        await engine.close()
