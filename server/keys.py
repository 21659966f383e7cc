"""Typed application keys: everything the handlers share, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from server.clock import Clock
    from server.config import ServerSettings
    from server.dispatch import Dispatcher
    from server.live import LiveState
    from server.ratelimit import RateLimiter
    from server.saved import SavedMonitoring
    from server.stats import Stats
    from server.storage.store import Store
    from server.webhooks.dispatch import WebhookDispatch

SETTINGS: web.AppKey[ServerSettings] = web.AppKey("settings")
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
STORE: web.AppKey[Store] = web.AppKey("store")
LIVE: web.AppKey[LiveState] = web.AppKey("live")
DISPATCH: web.AppKey[Dispatcher] = web.AppKey("dispatch")
LIMITER: web.AppKey[RateLimiter] = web.AppKey("limiter")
STATS: web.AppKey[Stats] = web.AppKey("stats")
STARTED_AT: web.AppKey[float] = web.AppKey("started_at")
WEBHOOKS: web.AppKey[WebhookDispatch] = web.AppKey("webhooks")
SAVED: web.AppKey[SavedMonitoring] = web.AppKey("saved")
