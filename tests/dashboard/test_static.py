"""The dashboard's files: only the manifest's, with a strict CSP, the right caching, no way out."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from server.api.dashboard import ASSETS, CSP, MANIFEST, ROOT, UPLOT
from tests.dashboard.kit import EXPECTED_CSP
from tests.server.streamkit import ServerUnderTest


def _assert_dashboard_headers(response: aiohttp.ClientResponse) -> None:
    assert response.headers["Content-Security-Policy"] == EXPECTED_CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_the_page_and_every_file_carry_the_csp_and_the_right_cache(
    srv: ServerUnderTest[Any],
) -> None:
    assert CSP == EXPECTED_CSP
    async with aiohttp.ClientSession(base_url=srv.url) as http:
        async with http.get("/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert response.headers["Cache-Control"] == "no-cache"
            _assert_dashboard_headers(response)
            page = await response.text()
        for name in MANIFEST:
            if name == "index.html":
                continue
            async with http.get(f"/static/{name}") as response:
                assert response.status == 200, name
                _assert_dashboard_headers(response)
                body = await response.read()
                assert body == (ROOT / name).read_bytes()
                cache = response.headers["Cache-Control"]
                if name.startswith("vendor/"):
                    assert cache == "public, max-age=31536000, immutable", name
                    assert UPLOT in name  # a versioned name: safe to cache for a year
                else:
                    assert cache == "no-cache", name
                etag = response.headers["ETag"]
            async with http.get(f"/static/{name}", headers={"If-None-Match": etag}) as again:
                assert again.status == 304
                assert await again.read() == b""
    # The page loads the vendored uPlot and the app, nothing inline.
    assert f'src="/static/{UPLOT}/uPlot.iife.min.js"' in page
    assert 'src="/static/app.js"' in page
    assert "<style" not in page
    assert "style=" not in page
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "an inline script"


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server/app.py",
        "/static/..%2fapi%2fdashboard.py",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static//etc/passwd",
        "/static/vendor/../app.js/../../api/fleet.py",
        "/static/index.html",
        "/static/vendor/README",
        "/static/vendor/uplot-1.6.32/LICENSE",
        "/static/app.js.map",
        "/static/",
        "/static/APP.JS",
        "/static/app.js%00.png",
    ],
)
async def test_nothing_outside_the_manifest_is_served(srv: ServerUnderTest[Any], path: str) -> None:
    async with (
        aiohttp.ClientSession(base_url=srv.url) as http,
        http.get(path, allow_redirects=False) as response,
    ):
        assert response.status == 404, path
        if response.headers.get("Content-Security-Policy"):
            _assert_dashboard_headers(response)
        body = await response.read()
    for asset in ASSETS.values():
        assert asset.body != body


def test_the_manifest_lists_every_file_of_the_dashboard() -> None:
    """A new module that is not in the manifest would 404 in the browser: caught here."""
    files = {
        p.relative_to(ROOT).as_posix()
        for p in ROOT.rglob("*")
        if p.is_file() and p.suffix in {".html", ".js", ".css", ".svg"}
    }
    assert files == set(MANIFEST)


def test_the_app_never_writes_markup_or_inline_styles() -> None:
    """Every string reaches the DOM as text: no innerHTML / outerHTML / insertAdjacentHTML /
    document.write, no style attributes (the CSP would refuse them anyway)."""
    for name in MANIFEST:
        if not name.endswith(".js") or name.startswith("vendor/"):
            continue
        source = (ROOT / name).read_text()
        for banned in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            'setAttribute("style"',
            "eval(",
            "new Function",
        ):
            assert banned not in source, f"{name} uses {banned}"
    vendor = (ROOT / UPLOT / "uPlot.iife.min.js").read_text()
    assert "innerHTML" not in vendor  # uPlot builds its DOM with textContent too
    assert (ROOT / UPLOT / "LICENSE").read_text().startswith("The MIT License")
