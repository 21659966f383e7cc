"""The whole dashboard in real headless Chromium, against the real server and a REAL agent:
sign up → create a node → the agent connects → the node turns up in the fleet live → alerts
fire and appear without a reload → saved monitoring on → history chart with points → a webhook
added and tested, its outcome shown → account deletion requested. Screenshots of every main
view go to the test's tmp folder (``screenshots/``)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import aiohttp
import pytest

from server.clock import SystemClock
from tests.agent.agent_process import AgentProcess
from tests.dashboard.kit import PASSWORD, Watched, launched
from tests.server.streamkit import ServerUnderTest
from tests.server.webhooks.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

RULES = """
include_defaults = false

[[rule]]
name = "load_watch"
metric = "load1"
op = ">="
threshold = 0
for = "5s"
severity = "warning"
summary = "1-minute load is {value:.2f}"

[[rule]]
name = "load_page"
metric = "load1"
op = ">="
threshold = 0
for = "14s"
severity = "critical"
summary = "Still loaded: {value:.2f}"
"""


async def points(w: Watched, chart: str) -> int:
    value = await w.page.get_attribute(f"[data-chart={chart}]", "data-points")
    return int(value or 0)


async def test_sign_up_to_deletion_with_a_real_agent(
    chromium: Path, srv: ServerUnderTest[SystemClock], shots: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    email = f"flow-{secrets.token_hex(4)}@example.com"
    agent: AgentProcess | None = None
    async with Receiver() as receiver, launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        page = w.page
        try:
            # -- sign up -----------------------------------------------------------------
            await page.goto(srv.url + "/")
            await page.evaluate("window.__sameDocument = 'flow'")
            await page.click("text=Create an account")
            await page.fill("input[name=name]", "Flow Tester")
            await page.fill("input[name=email]", email)
            await page.fill("input[name=password]", PASSWORD)
            await page.select_option("select[name=plan]", "business")  # 1 s agent interval
            await page.click("button[type=submit]")
            welcome = page.locator("dialog", has_text="your first API key")
            api_key = (await welcome.locator("code").text_content() or "").strip()
            assert api_key.startswith("oc_key_")
            await welcome.locator("text=Continue").click()
            await page.wait_for_selector(".fleet .empty[data-kind=none]")
            await w.shot(shots, "01-fleet-empty")

            # -- create a node: the enrolment snippet shows its token --------------------
            await page.click(".view-head >> text=Add node")
            await page.fill("dialog input[type=text]", "vpn-fra-1")
            await page.click("dialog >> text=Create node")
            snippet = page.locator(".snippet")
            token = await snippet.get_attribute("data-token")
            assert token
            assert token.startswith("oc_node_")
            shown = await snippet.text_content() or ""
            assert f"ONECONNECT_AGENT_TOKEN={token}" in shown
            assert f"ONECONNECT_AGENT_SERVER_URL={srv.url}" in shown
            await w.shot(shots, "02-enrolment")
            await page.click("dialog >> text=Done")
            row = page.locator(".grid-body .grid-row", has_text="vpn-fra-1")
            await row.wait_for()
            assert await row.get_attribute("data-status") == "down"

            # -- a real agent connects: the node turns up live, then its alerts ----------
            agent = await AgentProcess.start(
                env={
                    "ONECONNECT_AGENT_SERVER_URL": srv.url,
                    "ONECONNECT_AGENT_TOKEN": token,
                    "ONECONNECT_AGENT_RULES": str(rules),
                    "ONECONNECT_AGENT_INTERVAL": "1",
                }
            )
            await page.wait_for_selector(
                ".grid-body .grid-row[data-status=up] .gauge:not([data-level=none])",
                timeout=20_000,
            )
            await w.shot(shots, "03-fleet-live")
            await page.wait_for_selector(
                ".grid-body .grid-row[data-status=degraded] .count-badge[data-severity=warning]",
                timeout=20_000,
            )
            assert (await row.locator(".count-badge").text_content()) == "1"
            await w.shot(shots, "04-fleet-alert")

            # -- the alerts view: the second alert arrives while we look at it -----------
            await page.click(".nav >> text=Alerts")
            await page.wait_for_selector(".alert[data-rule=load_watch][data-severity=warning]")
            await page.wait_for_selector(
                ".alert[data-rule=load_page][data-severity=critical]", timeout=20_000
            )
            assert await page.locator(".nav-count").text_content() == "2"
            await w.shot(shots, "05-alerts")

            # -- the node view: live charts ----------------------------------------------
            await page.click(".alert[data-rule=load_page] .alert-node")
            await page.wait_for_selector(".node-view .status[data-status=degraded]")
            async with asyncio.timeout(15):
                # Polled: wait_for_function needs eval, which the page's CSP refuses.
                while await points(w, "cpu") < 3:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            await page.wait_for_selector(".chart canvas >> nth=9")  # ten charts drawn
            await w.shot(shots, "06-node-live", full_page=True)

            # -- saved monitoring on, with the consent recorded --------------------------
            await page.click(".nav >> text=Settings")
            switch = page.locator("#saved-switch")
            assert await switch.get_attribute("aria-checked") == "false"
            await switch.click()
            await page.click("dialog >> text=Turn on and record consent")
            await page.wait_for_selector("#saved-switch[aria-checked=true]")
            state = await page.locator("#saved-state").text_content() or ""
            assert "On" in state
            assert "Consent recorded" in state
            assert "90 days" in state
            await page.locator("#s-saved").scroll_into_view_if_needed()
            await w.shot(shots, "07-settings-saved-monitoring")

            # -- history: the chart gets points from what is now saved -------------------
            await page.click("#s-nodes >> text=vpn-fra-1")
            await page.click(".node-view >> button[data-mode=history]")
            await page.click("button[data-range='1h']")
            await page.wait_for_selector(".charts[data-source=history]:not([aria-busy])")
            async with asyncio.timeout(30):
                while await points(w, "cpu") == 0:
                    await asyncio.sleep(1.0)
                    await page.click("#history-refresh")
                    await page.wait_for_selector(".charts:not([aria-busy])")
            async with asyncio.timeout(30):  # a second bucket (8 s at 1 h): a line, not a dot
                while await points(w, "memory") < 2:
                    await asyncio.sleep(1.0)
                    await page.click("#history-refresh")
                    await page.wait_for_selector(".charts:not([aria-busy])")
            for span in ("24h", "7d", "30d", "1h"):
                await page.click(f"button[data-range='{span}']")
                await page.wait_for_selector(".charts:not([aria-busy])")
            assert await points(w, "cpu") > 0
            assert await page.locator(".chart-note", has_text="Saved history").count() == 1
            await w.shot(shots, "08-node-history", full_page=True)

            # -- a webhook to a loopback receiver: test sent, outcome shown -------------
            await page.click(".nav >> text=Settings")
            await page.click("#s-webhooks >> text=Add endpoint")
            await page.fill("dialog input[type=url]", receiver.url("/hook"))
            await page.click("dialog >> text=Add endpoint")
            secret_dialog = page.locator("dialog", has_text="Signing secret")
            secret = (await secret_dialog.locator("code").text_content() or "").strip()
            assert secret.startswith("whsec_")
            await secret_dialog.locator("text=Done").click()
            card = page.locator(".webhook").first
            await card.locator("text=Send test").click()
            outcome = page.locator(".webhook .outcome[data-result=ok]")
            await outcome.wait_for()
            assert (await outcome.text_content() or "").startswith("Delivered: HTTP 204 in")
            tests = [r for r in receiver.got if r.json.get("type") == "alert.test"]
            assert len(tests) == 1
            assert tests[0].verify(secret)["type"] == "alert.test"
            await page.wait_for_selector(".webhook .attempts")
            await page.locator("#s-webhooks").scroll_into_view_if_needed()
            await w.shot(shots, "09-webhook-tested")

            # -- account deletion; an operator's legal hold keeps part of it, shown --------
            ends = time.time() + 30 * 86400
            await srv.store.add_hold(
                email,
                kind="dispute",
                reason="chargeback under review",
                categories=["registration", "plan"],
                ends_at=ends,
                now=time.time(),
            )
            await page.click("text=Delete my account…")
            await page.fill("dialog input[type=email]", email)
            await page.click("dialog >> text=Delete everything")
            held = page.locator(".deletion[data-state=held]")
            await held.wait_for()
            text = await held.text_content() or ""
            assert "some data is held" in text
            assert "dispute: keeps registration, plan until" in text
            assert "chargeback" not in text  # the operator's reason is not the developer's
            await w.shot(shots, "10-deletion-held")
            await page.click("text=Check the status now")  # the status URL, no credential
            await page.wait_for_selector(".deletion[data-state=held] .holds li")
            assert await page.evaluate("window.__sameDocument") == "flow"  # never reloaded
            await w.assert_clean()
        except BaseException:
            await w.shot(shots, "zz-failure", full_page=True)
            raise
        finally:
            if agent is not None:
                await agent.kill()
            await w.context.close()
    async with (
        aiohttp.ClientSession(base_url=srv.url) as http,
        http.get("/api/v1/account", headers={"Authorization": f"Bearer {api_key}"}) as gone,
    ):
        assert gone.status == 401
