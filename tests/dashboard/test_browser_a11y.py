"""Accessibility of the dashboard in real headless Chromium: every piece of visible text meets
WCAG AA contrast and every control has a name, on each main view in the light and the dark
theme; the keyboard alone reaches the navigation and the nodes, opens a node, and Escape
closes a dialog without doing what it asked about."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.clock import SystemClock
from server.keys import DISPATCH
from server.storage.records import NodeRef
from tests.dashboard.kit import Watched, alert_event, connect, feed, launched
from tests.dashboard.test_browser_views import account_with_nodes
from tests.server.streamkit import ServerUnderTest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NAMES = ("edge-ams-1", "edge-fra-2", "edge-nyc-3", "edge-sgp-4")
FOCUSED = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {
    tag: el.tagName.toLowerCase(), cls: el.className, text: el.textContent.trim(),
    href: el.getAttribute("href"), row: el.closest(".grid-row")?.dataset.id ?? null,
    outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 1,
    inDialog: Boolean(el.closest("dialog[open]")),
  };
}"""


async def a_fleet(srv: ServerUnderTest[SystemClock]) -> tuple[str, str, list[NodeRef]]:
    """Four nodes: two up (CPU ok and critical), one down after sending data, one that never
    connected; on the first, one alert firing and one resolved."""
    email, key, refs = await account_with_nodes(srv, NAMES)
    assert srv.app is not None
    rng = random.Random(6)
    for ref, cpu in zip(refs[:3], (22.0, 96.0, 51.0), strict=True):
        connect(srv.live, ref)
        feed(srv.live, ref, 1, rng, cpu=cpu)
        feed(srv.live, ref, 2, rng, cpu=cpu)
    srv.live.disconnected(refs[2].id)
    dispatch = srv.app[DISPATCH]
    fired = alert_event(1, rule="disk_full", severity="critical", fingerprint="00000000000000cc")
    assert await dispatch.submit(refs[0], fired)
    over = alert_event(
        2,
        rule="disk_full",
        severity="critical",
        status="resolved",
        summary="disk is fine",
        fingerprint="00000000000000cc",
    )
    assert await dispatch.submit(refs[0], over)
    assert await dispatch.submit(refs[0], alert_event(3, labels={"core": "all"}))
    return email, key, refs


async def tokens(srv: ServerUnderTest[SystemClock], key: str) -> dict[str, str]:
    """Each node's name and token prefix, from the API."""
    async with (
        aiohttp.ClientSession(base_url=srv.url) as http,
        http.get("/api/v1/nodes", headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        assert r.status == 200
        return {n["name"]: n["token_prefix"] for n in (await r.json())["nodes"]}


async def use_theme(w: Watched, theme: str) -> None:
    """Click the header's toggle (auto → light → dark) until the page has ``theme``."""
    from playwright.async_api import expect

    for _ in range(3):
        if await w.page.evaluate("document.documentElement.dataset.theme || 'auto'") == theme:
            break
        await w.page.click("#theme-toggle")
    await expect(w.page.locator("html")).to_have_attribute("data-theme", theme)
    await expect(w.page.locator("#theme-toggle")).to_have_text(f"Theme: {theme}")


# Known cases put into the signed-out page (styles through the CSSOM: the CSP forbids style
# attributes, not this): id -> (CSS of a white box around it, CSS of the text element, text).
CANARIES = {
    "c-normal": ("", "color: #777777", "4.48:1, just under"),
    "c-large": ("", "color: #949494; font-size: 24px", "3.03:1 is enough when large"),
    "c-bold": ("", "color: #949494; font-size: 19px; font-weight: 700", "large: bold"),
    "c-thin": ("", "color: #949494; font-size: 19px", "not large: not bold"),
    "c-alpha": ("", "color: rgba(0, 0, 0, 0.45)", "alpha over white"),
    "c-faded": ("", "color: #000000; opacity: 0.4", "an opacity group"),
    "c-gradient": (
        "background: #000 linear-gradient(90deg, #000000, #cccccc)",
        "color: #ffffff",
        "white on a gradient ending light",
    ),
    "c-hidden": ("", "color: #f0f0f0; opacity: 0", "opacity 0"),
    "c-invisible": ("", "color: #f0f0f0; visibility: hidden", "visibility hidden"),
}
CANARY_SCRIPT = """(cases) => {
  for (const [id, [box, text, words]] of Object.entries(cases)) {
    const outer = document.createElement("div");
    outer.style.cssText = "background: #ffffff; padding: 4px; " + box;
    const inner = document.createElement("span");
    inner.id = id;
    inner.style.cssText = text;
    inner.textContent = words;
    outer.append(inner);
    document.body.append(outer);
  }
  const off = document.createElement("button");
  off.id = "c-disabled";
  off.disabled = true;
  off.style.cssText = "color: #dddddd; background: #ffffff";
  off.textContent = "disabled: exempt";
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
  label.setAttribute("y", "15");
  label.textContent = "in an svg";
  svg.append(label);
  document.body.append(off, svg);
}"""


async def test_the_contrast_check_finds_low_contrast_text_and_only_that(
    chromium: Path, srv: ServerUnderTest[SystemClock]
) -> None:
    async with launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        await w.page.emulate_media(color_scheme="light")
        await w.page.goto(srv.url + "/#/login")
        await w.page.locator("input[name=email]").wait_for()
        assert await w.low_contrast() == []
        await w.page.evaluate(CANARY_SCRIPT, CANARIES)
        found = {o["where"].split("#")[-1]: o for o in await w.low_contrast()}
        assert sorted(found) == ["c-alpha", "c-faded", "c-gradient", "c-normal", "c-thin"]
        assert found["c-normal"]["ratio"] == 4.48
        assert (found["c-normal"]["fg"], found["c-normal"]["bg"]) == ("#777777", "#ffffff")
        assert found["c-thin"]["needed"] == 4.5
        assert found["c-alpha"]["fg"] == "#8c8c8c"
        assert (found["c-faded"]["fg"], found["c-faded"]["ratio"]) == ("#999999", 2.85)
        assert (found["c-gradient"]["bg"], found["c-gradient"]["ratio"]) == ("#cccccc", 1.61)
        await w.context.close()


async def test_every_view_has_readable_text_and_named_controls_in_both_themes(
    chromium: Path, srv: ServerUnderTest[SystemClock], shots: Path
) -> None:
    from playwright.async_api import expect

    email, _, refs = await a_fleet(srv)
    problems: dict[str, Any] = {}

    async def audit(w: Watched, name: str) -> None:
        await w.page.wait_for_timeout(250)  # transitions (the switch's knob) have ended
        await w.shot(shots, f"a11y-{name}", full_page=True)
        found = {"contrast": await w.low_contrast(), "unlabelled": await w.unlabelled()}
        if any(found.values()):
            problems[name] = found

    async with launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        page = w.page
        # Signed out: the theme follows the system (no header, no toggle).
        for scheme in ("light", "dark"):
            await page.emulate_media(color_scheme=scheme)
            await page.goto(srv.url + "/#/login")
            await page.locator("input[name=email]").wait_for()
            await audit(w, f"{scheme}-login")
            await page.goto(srv.url + "/#/signup")
            await page.locator("input[name=company]").wait_for()
            await audit(w, f"{scheme}-signup")
        await page.emulate_media(color_scheme="light")

        await w.sign_in(email)
        rows = page.locator(".grid-body .grid-row")
        alerts = page.locator(".alerts-list .alert")
        for theme in ("light", "dark"):
            await page.goto(srv.url + "/#/fleet")
            await use_theme(w, theme)
            await expect(rows).to_have_count(4)
            await expect(page.locator(".tile .tile-value")).to_have_text(["4", "1", "1", "2", "1"])
            await expect(page.locator(".nav-count")).to_have_text("1")
            await audit(w, f"{theme}-fleet")

            await page.goto(srv.url + f"/#/nodes/{refs[0].id}")
            await expect(page.locator("#node-title")).to_have_text(NAMES[0])
            await expect(page.locator(".node-view .alert")).to_have_count(2)
            await expect(page.locator(".node-view .charts")).to_have_attribute(
                "data-source", "live"
            )
            await page.locator(".chart canvas >> nth=0").wait_for()
            await audit(w, f"{theme}-node")

            await page.goto(srv.url + "/#/alerts?status=all")
            await expect(alerts).to_have_count(2)
            statuses = await alerts.evaluate_all("all => all.map(e => e.dataset.status)")
            assert statuses == ["firing", "resolved"]
            await audit(w, f"{theme}-alerts")

            await page.goto(srv.url + "/#/settings")
            await expect(page.locator("#s-nodes .list-item")).to_have_count(4)
            await page.locator("#s-data").wait_for()
            await audit(w, f"{theme}-settings")
            await page.click("#s-nodes >> text=Add node")
            await page.locator("dialog[open] input").wait_for()
            await audit(w, f"{theme}-dialog")
            await page.keyboard.press("Escape")
            await expect(page.locator("dialog")).to_have_count(0)

        assert problems == {}, json.dumps(problems, indent=1)
        await w.assert_clean()
        await w.context.close()


async def test_the_keyboard_reaches_the_nodes_opens_one_and_escape_closes_dialogs(
    chromium: Path, srv: ServerUnderTest[SystemClock]
) -> None:
    from playwright.async_api import expect

    email, key, _ = await a_fleet(srv)
    before = await tokens(srv, key)
    assert sorted(before) == sorted(NAMES)
    async with launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        page = w.page
        await w.sign_in(email)
        # From the top of a freshly loaded fleet view, Tab only.
        await page.reload()
        await expect(page.locator(".grid-body .grid-row")).to_have_count(4)
        first = await page.locator(".grid-body .grid-row >> nth=0").get_attribute("data-id")
        path: list[dict[str, Any]] = []
        for _ in range(40):
            await page.keyboard.press("Tab")
            path.append(await page.evaluate(FOCUSED))
            if "node-link" in path[-1]["cls"]:
                break
        texts = [f["text"] for f in path]
        assert path[0]["cls"] == "skip-link", texts
        navs = [f["text"] for f in path if "nav-link" in f["cls"]]
        assert navs == ["Fleet", "Alerts1", "Settings"], texts  # "1": the firing count
        assert "node-link" in path[-1]["cls"], texts
        assert path[-1]["row"] == first  # the first row's node, before any other row's
        assert [f["text"] for f in path if f["row"] is not None] == [path[-1]["text"]]
        # Every stop shows where the focus is.
        assert [f["text"] for f in path if not f["outline"]] == []

        # Enter on the node's link opens the node view.
        await page.keyboard.press("Enter")
        name = path[-1]["text"]
        await expect(page.locator("#node-title")).to_have_text(name)
        assert page.url.endswith(f"#/nodes/{first}")

        # The skip link is shown when focused and moves the focus to the main content.
        await page.goto(srv.url + "/#/fleet")
        await expect(page.locator(".grid-body .grid-row")).to_have_count(4)
        await page.reload()
        await expect(page.locator(".grid-body .grid-row")).to_have_count(4)
        await page.keyboard.press("Tab")
        skip = page.locator(".skip-link")
        await expect(skip).to_be_focused()
        box = await skip.bounding_box()
        assert box is not None
        assert box["x"] >= 0, box
        assert box["y"] >= 0, box
        await page.keyboard.press("Enter")
        await expect(page.locator("main#main")).to_be_focused()

        # Settings: Enter opens "Add node"; the focus is in the dialog; Escape closes it,
        # creates nothing and gives the focus back to the button.
        await page.goto(srv.url + "/#/settings")
        await expect(page.locator("#s-nodes .list-item")).to_have_count(4)
        add = page.locator("#s-nodes button >> text=Add node")
        await add.focus()
        await page.keyboard.press("Enter")
        dialog = page.locator("dialog[open]")
        await expect(dialog.locator("h2")).to_have_text("Add a node")
        assert (await page.evaluate(FOCUSED))["inDialog"]
        await page.keyboard.type("never-created")
        await page.keyboard.press("Escape")
        await expect(page.locator("dialog")).to_have_count(0)
        await expect(add).to_be_focused()

        # Escape on "Issue a new token?" keeps the current token.
        rotate = page.locator("#s-nodes .list-item >> nth=0 >> text=New token")
        await rotate.focus()
        await page.keyboard.press("Enter")
        await expect(dialog.locator("h2")).to_have_text(f"Issue a new token for {NAMES[0]}?")
        await page.keyboard.press("Escape")
        await expect(page.locator("dialog")).to_have_count(0)
        await expect(rotate).to_be_focused()

        assert await tokens(srv, key) == before  # no node created, no token replaced
        await w.assert_clean()
        await w.context.close()
