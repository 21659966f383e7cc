"""The dashboard in real headless Chromium: hostile strings render as text under a strict CSP
that the browser really enforces; the fleet view sorts (keyboard too), filters and updates
live; phone width and the dark theme. Live state is fed in-process (no agent needed)."""

from __future__ import annotations

import asyncio
import random
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.clock import SystemClock
from server.keys import DISPATCH
from server.storage.records import NodeRef
from tests.dashboard.kit import (
    EXPECTED_CSP,
    PASSWORD,
    Watched,
    alert_event,
    connect,
    feed,
    launched,
)
from tests.server.streamkit import ServerUnderTest
from tests.server.webhooks.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"
HOSTILE_ATTR = '"><svg onload=alert(3)>'
NAMES = (HOSTILE, HOSTILE_ATTR, "javascript:alert(4)")
FOREIGN = "img, svg, iframe, object, embed, frame, base, form[action], link[rel=import]"


async def account_with_nodes(
    srv: ServerUnderTest[SystemClock], names: tuple[str, ...], **account: str
) -> tuple[str, str, list[NodeRef]]:
    email = f"view-{secrets.token_hex(4)}@example.com"
    async with aiohttp.ClientSession(base_url=srv.url) as http:
        body = {"name": "Dev", "email": email, "password": PASSWORD, "plan": "business"}
        async with http.post("/api/v1/accounts", json={**body, **account}) as r:
            created = await r.json()
            assert r.status == 201, created
        headers = {"Authorization": f"Bearer {created['api_key']}"}
        refs = []
        for name in names:
            async with http.post("/api/v1/nodes", json={"name": name}, headers=headers) as r:
                node = (await r.json())["node"]
            ref = await srv.store.node_ref(created["account"]["id"], node["id"])
            assert ref is not None
            refs.append(ref)
    return email, created["api_key"], refs


async def test_hostile_strings_render_as_text_under_an_enforced_csp(
    chromium: Path, srv: ServerUnderTest[SystemClock], shots: Path
) -> None:
    email, key, refs = await account_with_nodes(srv, NAMES, name=HOSTILE, company=HOSTILE_ATTR)
    assert srv.app is not None
    rng = random.Random(5)
    connect(srv.live, refs[0])
    feed(srv.live, refs[0], 1, rng)
    await srv.app[DISPATCH].submit(
        refs[0], alert_event(1, summary=HOSTILE, labels={"mount": HOSTILE_ATTR})
    )
    async with Receiver() as receiver, aiohttp.ClientSession(base_url=srv.url) as http:
        async with http.post(
            "/api/v1/webhooks",
            json={"url": receiver.url("/hook"), "name": HOSTILE},
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            assert r.status == 201

        async with launched(chromium) as browser:
            w = await Watched.open(browser, srv.url)
            page = w.page
            responses: list[Any] = []
            page.on("response", lambda r: responses.append(r))
            first = await page.goto(srv.url + "/")
            assert first is not None
            assert first.headers["content-security-policy"] == EXPECTED_CSP
            assert first.headers["x-content-type-options"] == "nosniff"
            await w.sign_in(email)
            statics = [r for r in responses if "/static/" in r.url]
            assert len(statics) >= 10
            for response in statics:
                assert response.headers["content-security-policy"] == EXPECTED_CSP, response.url

            names = await page.locator(".node-link").all_text_contents()
            assert sorted(names) == sorted(NAMES)
            await w.shot(shots, "11-hostile-fleet")
            await page.click(".node-link >> text=<img src=x")
            await page.wait_for_selector(".node-view .alert")
            assert await page.locator("#node-title").text_content() == HOSTILE
            assert HOSTILE in await page.title()
            assert await page.locator(".node-view .alert-summary").text_content() == HOSTILE
            await page.click(".nav >> text=Alerts")
            await page.wait_for_selector(".alerts-list .alert")
            assert await page.locator(".alert-node").text_content() == HOSTILE
            assert await page.locator(".alert .chip").text_content() == f"mount={HOSTILE_ATTR}"
            await w.shot(shots, "12-hostile-alerts")
            await page.click(".nav >> text=Settings")
            await page.wait_for_selector(".webhook h3")
            assert await page.locator(".webhook h3").text_content() == HOSTILE
            facts = await page.locator("#s-plan .facts").text_content() or ""
            assert HOSTILE in facts
            assert HOSTILE_ATTR in facts
            await page.click("#s-nodes >> text=New token >> nth=0")  # a dialog with the name
            await page.wait_for_selector("dialog h2")
            assert HOSTILE in (await page.locator("dialog h2").text_content() or "")
            await page.click("dialog >> text=Cancel")

            assert await w.unlabelled() == []  # settings: every control has a label
            assert await page.locator(FOREIGN).count() == 0
            scripts = await page.eval_on_selector_all(
                "script", "all => all.map(s => s.getAttribute('src'))"
            )
            assert scripts == ["/static/vendor/uplot-1.6.32/uPlot.iife.min.js", "/static/app.js"]
            await w.assert_clean()  # no dialog, no page error, no CSP violation

            # The CSP is really enforced: an inline script put into the page does not run.
            await page.evaluate(
                "() => { const s = document.createElement('script');"
                " s.textContent = 'window.__inlineRan = true'; document.body.append(s); }"
            )
            await asyncio.sleep(0.2)
            assert await page.evaluate("window.__inlineRan === undefined")
            violations = await w.csp_violations()
            assert any("script-src" in v for v in violations), violations
            await w.context.close()


async def test_fleet_sorts_filters_updates_live_and_fits_a_phone(
    chromium: Path, srv: ServerUnderTest[SystemClock], shots: Path
) -> None:
    names = tuple(f"node-{i}" for i in range(40))
    email, _, refs = await account_with_nodes(srv, names)
    assert srv.app is not None
    rng = random.Random(9)
    for i, ref in enumerate(refs):
        connect(srv.live, ref)
        feed(srv.live, ref, 1, rng, cpu=float(i * 2))
    for ref in refs[-3:]:
        srv.live.disconnected(ref.id)
    await srv.app[DISPATCH].submit(refs[5], alert_event(1, severity="critical"))
    from playwright.async_api import expect  # only once the chromium fixture found it

    async with launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        page = w.page
        await w.sign_in(email)
        rows = page.locator(".grid-body .grid-row")
        shown = page.locator(".shown")
        await expect(shown).to_have_text("Showing 40 of 40")
        # Only the rows on screen (and a few more) are in the DOM; the table says how many.
        assert 10 < await rows.count() < 40
        await expect(page.locator(".fleet-grid")).to_have_attribute("aria-rowcount", "41")
        tiles = await page.locator(".tile .tile-value").all_text_contents()
        assert tiles == ["40", "36", "1", "3", "1"]  # nodes, up, degraded, down, alerts
        # Default order: problems first (down, then degraded), then by name.
        order = await page.eval_on_selector_all(
            ".grid-body .grid-row", "r => r.map(e => e.dataset.id)"
        )
        assert order[:4] == [r.id for r in (*refs[37:], refs[5])]

        # Sort by CPU with the keyboard: Enter on the column header, twice.
        top = page.locator(".grid-body .grid-row >> nth=0")
        cpu = page.locator("[data-key=cpu]")
        await page.focus("[data-key=cpu] button")
        await page.keyboard.press("Enter")
        await expect(cpu).to_have_attribute("aria-sort", "descending")
        # 78 % is refs[39]'s last value (shown dimmed: it is down); nulls would sort last.
        await expect(top).to_have_attribute("data-id", refs[39].id)
        await page.keyboard.press("Enter")
        await expect(cpu).to_have_attribute("aria-sort", "ascending")
        await expect(top).to_have_attribute("data-id", refs[0].id)
        await page.keyboard.press("Enter")
        await expect(top).to_have_attribute("data-id", refs[39].id)

        # Live: a node's CPU jumps; it moves to the top of the CPU-descending list.
        feed(srv.live, refs[0], 2, rng, cpu=99.9)
        await expect(top).to_have_attribute("data-id", refs[0].id, timeout=10_000)
        assert await top.locator(".c-cpu .gauge-val").text_content() == "100 %"
        assert await top.locator(".c-cpu .gauge").get_attribute("data-level") == "crit"
        await w.shot(shots, "13-fleet-sorted-by-cpu")
        assert await w.unlabelled() == []

        # Filters: the name box, then a status tile.
        await page.fill("#fleet-filter", "node-1")
        await expect(shown).to_have_text("Showing 11 of 40")  # node-1, node-10 … node-19
        await expect(rows).to_have_count(11)
        await page.fill("#fleet-filter", "")
        await page.click(".tile[data-status=down]")
        await expect(shown).to_have_text("Showing 3 of 40")
        await expect(rows).to_have_count(3)
        await page.click(".tile[data-status=down]")
        await expect(shown).to_have_text("Showing 40 of 40")

        # Scrolling brings the other rows in (the list is windowed, not cut).
        await page.mouse.wheel(0, 4000)
        await expect(page.locator(".grid-row[aria-rowindex='41']")).to_have_count(1)
        await page.mouse.wheel(0, -4000)

        # Theme toggle: auto → light → dark.
        await page.click("#theme-toggle")
        await expect(page.locator("html")).to_have_attribute("data-theme", "light")
        await page.click("#theme-toggle")
        await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        await w.shot(shots, "14-fleet-dark")
        await w.assert_clean()
        await w.context.close()

        # A phone, in the dark: no sideways scrolling, every view usable.
        phone = await Watched.open(
            browser,
            srv.url,
            viewport={"width": 390, "height": 844},
            color_scheme="dark",
            is_mobile=True,
            has_touch=True,
        )
        await phone.sign_in(email)
        await expect(phone.page.locator(".shown")).to_have_text("Showing 40 of 40")
        for view, shot in (("#/fleet", "15-phone-fleet"), ("#/alerts", "16-phone-alerts")):
            await phone.page.goto(srv.url + "/" + view)
            await phone.page.wait_for_timeout(400)
            width = await phone.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (view, width)
            await phone.shot(shots, shot)
        await phone.page.goto(srv.url + f"/#/nodes/{refs[5].id}")
        await phone.page.wait_for_selector(".chart canvas")
        assert await phone.page.evaluate("document.documentElement.scrollWidth") <= 390
        await phone.shot(shots, "17-phone-node")
        await phone.page.goto(srv.url + "/#/settings")
        await phone.page.wait_for_selector("#s-data")
        assert await phone.page.evaluate("document.documentElement.scrollWidth") <= 390
        await phone.shot(shots, "18-phone-settings")
        await phone.assert_clean()
        await phone.context.close()


async def test_a_mode_picked_while_the_node_still_loads_is_kept(
    chromium: Path, srv: ServerUnderTest[SystemClock]
) -> None:
    """Under load the node's own GET can answer after the user clicked History: the page's
    start-up must not switch it back to live (the range buttons stay, history loads)."""
    from playwright.async_api import expect

    email, key, refs = await account_with_nodes(srv, ("slow-node",))
    async with (
        aiohttp.ClientSession(base_url=srv.url) as http,
        http.patch(
            "/api/v1/account",
            json={"saved_monitoring": True},
            headers={"Authorization": f"Bearer {key}"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
    connect(srv.live, refs[0])
    feed(srv.live, refs[0], 3, random.Random(9))
    async with launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        page = w.page
        await w.sign_in(email)
        release = asyncio.Event()
        held: list[str] = []

        async def hold_node(route: Any) -> None:
            held.append(route.request.url)
            await release.wait()
            await route.continue_()

        await page.route(f"**/api/v1/nodes/{refs[0].id}", hold_node)
        await page.goto(srv.url + f"/#/nodes/{refs[0].id}")
        history = page.locator(".node-view button[data-mode=history]")
        await history.click()
        assert held, "the node's GET was not held back"
        await expect(page.locator("button[data-range='1h']")).to_be_visible()
        release.set()
        await expect(page.locator("#node-title")).to_have_text("slow-node")
        await page.wait_for_timeout(300)  # the start-up's last step has run
        await expect(history).to_have_attribute("aria-pressed", "true")
        await expect(page.locator("button[data-range='1h']")).to_be_visible()
        await expect(page.locator(".node-view .charts")).to_have_attribute("data-source", "history")
        await page.click("button[data-range='24h']")
        await expect(page.locator("button[data-range='24h']")).to_have_attribute(
            "aria-pressed", "true"
        )
        await w.assert_clean()
        await w.context.close()
