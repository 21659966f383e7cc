"""Typed application keys: everything the handlers share, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from server.clock import Clock
    from server.config import ServerSettings

SETTINGS: web.AppKey[ServerSettings] = web.AppKey("settings")
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
