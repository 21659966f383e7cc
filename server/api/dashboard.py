"""The dashboard: ``GET /`` (the page) and ``GET /static/{path}`` (its scripts, styles, vendor).

Static files come only from :data:`MANIFEST`, a fixed table of names read into memory at import:
a path not in it is 404 whatever it spells (``..``, encoded slashes, absolute paths), so no
request can reach another file. No build step: the files under ``server/dashboard/`` are served
as they are.

Caching: ``vendor/`` paths carry the library's version in their name and are cached for a year
(``immutable``); the page and the app's own files are ``no-cache`` with an ``ETag`` (a browser
revalidates and gets 304 while unchanged). Every dashboard response carries :data:`CSP` — no
inline script or style at all, everything from this origin — plus ``nosniff``,
``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

routes = web.RouteTableDef()

ROOT: Final = Path(__file__).resolve().parent.parent / "dashboard"
UPLOT: Final = "vendor/uplot-1.6.32"
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
REVALIDATE: Final = "no-cache"
IMMUTABLE: Final = "public, max-age=31536000, immutable"
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
MANIFEST: Final = (
    "index.html",
    "app.js",
    "api.js",
    "dom.js",
    "format.js",
    "charts.js",
    "live.js",
    "auth.js",
    "fleet.js",
    "fleetrows.js",
    "node.js",
    "nodes.js",
    "alerts.js",
    "settings.js",
    "webhooks.js",
    "style.css",
    "icon.svg",
    f"{UPLOT}/uPlot.iife.min.js",
    f"{UPLOT}/uPlot.min.css",
)
"""Every file the dashboard serves, relative to ``server/dashboard/``."""


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    cache: str
    etag: str


def _load(name: str) -> Asset:
    path = ROOT / name
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise RuntimeError(f"dashboard file missing: {path} ({exc.strerror})") from None
    cache = IMMUTABLE if name.startswith("vendor/") else REVALIDATE
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return Asset(body, _TYPES[path.suffix], cache, etag)


ASSETS: Final[dict[str, Asset]] = {name: _load(name) for name in MANIFEST}


def _headers(extra: dict[str, str]) -> dict[str, str]:
    return {**HEADERS, **extra}


def _serve(request: web.Request, asset: Asset) -> web.Response:
    headers = _headers({"Cache-Control": asset.cache, "ETag": asset.etag})
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


@routes.get("/", name="dashboard")
async def page(request: web.Request) -> web.Response:
    return _serve(request, ASSETS["index.html"])


@routes.get("/static/{path:.+}", name="dashboard_static")
async def static(request: web.Request) -> web.Response:
    asset = ASSETS.get(request.match_info["path"])
    if asset is None or request.match_info["path"] == "index.html":
        return web.Response(
            status=404,
            text="not found",
            headers=_headers({"Cache-Control": "no-store"}),
        )
    return _serve(request, asset)


def _doc(summary: str, content: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "tags": ["dashboard"],
        "security": [],
        "responses": {
            "200": {"description": "the file", "content": {content: {}}},
            "304": {"description": "not modified (If-None-Match)"},
        },
    }


OPENAPI: dict[str, dict[str, Any]] = {
    "/": {"get": _doc("The dashboard (a single page; sign in there)", "text/html")},
    "/static/{path}": {
        "parameters": [
            {
                "name": "path",
                "in": "path",
                "required": True,
                "schema": {"enum": [name for name in MANIFEST if name != "index.html"]},
            }
        ],
        "get": {
            **_doc("The dashboard's scripts, styles and vendored uPlot", "*/*"),
            "responses": {
                **_doc("", "*/*")["responses"],
                "404": {"description": "not one of the dashboard's files"},
            },
        },
    },
}
