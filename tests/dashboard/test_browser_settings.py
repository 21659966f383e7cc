"""The dashboard's account actions in real headless Chromium: API keys created (shown once)
and revoked, signing out, a webhook endpoint edited and its secret rotated (deliveries then
signed with the new secret only), the account export downloaded, and resolved alerts listed
in the Alerts view. Outcomes are checked against the server's API, not just the page."""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from server.clock import SystemClock
from server.keys import DISPATCH
from tests.dashboard.kit import Watched, alert_event, connect, feed, launched
from tests.dashboard.test_browser_views import account_with_nodes
from tests.server.streamkit import ServerUnderTest
from tests.server.webhooks.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def api_status(
    srv: ServerUnderTest[SystemClock], path: str, **headers: str
) -> tuple[int, Any]:
    """GET ``path`` with these headers: the status and the JSON body (None if not JSON)."""
    async with (
        aiohttp.ClientSession(base_url=srv.url) as http,
        http.get(path, headers=headers) as r,
    ):
        body = await r.json() if r.content_type == "application/json" else None
        return r.status, body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_api_key_is_created_shown_once_works_and_is_revoked(
    chromium: Path, srv: ServerUnderTest[SystemClock], shots: Path
) -> None:
    from playwright.async_api import expect

    email, _, _ = await account_with_nodes(srv, ("key-node",))
    async with launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        page = w.page
        await w.sign_in(email)
        await page.goto(srv.url + "/#/settings?s=keys")
        keys = page.locator("#s-keys")
        await expect(keys.locator(".list-item")).to_have_count(1)  # the sign-up key

        await keys.get_by_role("button", name="Create API key").click()
        create = page.locator("dialog", has_text="Create an API key")
        await create.get_by_label("Name").fill("deploy script")
        await create.get_by_role("button", name="Create", exact=True).click()
        shown = page.locator("dialog", has_text="Shown only now")
        secret = (await shown.locator("code").text_content() or "").strip()
        assert secret.startswith("oc_key_"), secret
        assert "deploy script" in (await shown.locator("h2").text_content() or "")
        assert await w.unlabelled() == []
        await w.shot(shots, "20-api-key-created")
        await shown.get_by_role("button", name="Done").click()
        await expect(page.locator("dialog")).to_have_count(0)

        # Listed with its prefix only: the secret is nowhere on the page any more.
        item = keys.locator(".list-item", has_text="deploy script")
        await expect(keys.locator(".list-item")).to_have_count(2)
        prefix = (await item.locator("code").text_content() or "").strip().rstrip("…")
        assert prefix
        assert secret.startswith(prefix)
        assert len(prefix) < len(secret)
        assert secret not in (await page.locator("body").text_content() or "")

        # The new key works against the API.
        status, body = await api_status(srv, "/api/v1/account", **bearer(secret))
        assert status == 200, body
        assert body["account"]["email"] == email

        # Revoked in the page (after a confirmation): the API refuses it at once.
        await item.get_by_role("button", name="Revoke").click()
        confirm = page.locator("dialog", has_text="Revoke the key")
        assert "deploy script" in (await confirm.locator("h2").text_content() or "")
        await confirm.get_by_role("button", name="Revoke key").click()
        await expect(page.locator(".toast", has_text="Key revoked")).to_have_count(1)
        await expect(keys.locator(".list-item")).to_have_count(1)
        await expect(item).to_have_count(0)
        status, _ = await api_status(srv, "/api/v1/account", **bearer(secret))
        assert status == 401
        assert await w.unlabelled() == []
        await w.shot(shots, "21-api-key-revoked")
        await w.assert_clean()
        await w.context.close()


async def test_signing_out_ends_the_session(
    chromium: Path, srv: ServerUnderTest[SystemClock], shots: Path
) -> None:
    from playwright.async_api import expect

    email, _, _ = await account_with_nodes(srv, ("out-node",))
    async with launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        page = w.page
        await w.sign_in(email)
        await expect(page.locator("#who")).to_have_text(email)
        cookies = {c["name"]: c["value"] for c in await w.context.cookies(srv.url)}
        session = cookies.get("oc_session")
        assert session, cookies
        cookie = {"Cookie": f"oc_session={session}"}
        status, body = await api_status(srv, "/api/v1/account", **cookie)
        assert status == 200, body  # the cookie alone is a credential (reads need no CSRF)

        await page.get_by_role("button", name="Sign out").click()
        await expect(page.locator("input[name=email]")).to_be_visible()
        assert page.url.endswith("#/login")
        await expect(page.locator("#topbar")).to_be_hidden()
        assert await w.unlabelled() == []
        await w.shot(shots, "22-signed-out")

        # The server ended the session: the old cookie is refused, from the page and outside.
        fetched = await page.evaluate(
            "async () => (await fetch('/api/v1/account', {credentials: 'same-origin'})).status"
        )
        assert fetched == 401
        status, _ = await api_status(srv, "/api/v1/account", **cookie)
        assert status == 401
        await page.reload()  # a reload does not bring the session back
        await expect(page.locator("input[name=email]")).to_be_visible()
        await expect(page.locator("#topbar")).to_be_hidden()
        await w.assert_clean()
        await w.context.close()


async def test_a_webhook_is_edited_and_its_secret_rotated(
    chromium: Path, srv: ServerUnderTest[SystemClock], shots: Path
) -> None:
    from playwright.async_api import expect

    email, key, _ = await account_with_nodes(srv, ("hook-node",))
    async with Receiver() as receiver, launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        page = w.page
        await w.sign_in(email)
        await page.goto(srv.url + "/#/settings?s=webhooks")
        section = page.locator("#s-webhooks")
        await section.get_by_role("button", name="Add endpoint").click()
        add = page.locator("dialog", has_text="Add a webhook endpoint")
        await add.get_by_label("URL", exact=True).fill(receiver.url("/first"))
        await add.get_by_label("Name (optional)").fill("Ops hook")
        await add.get_by_role("button", name="Add endpoint").click()
        created = page.locator("dialog", has_text="Signing secret of Ops hook")
        old_secret = (await created.locator("code").text_content() or "").strip()
        assert old_secret.startswith("whsec_")
        await created.get_by_role("button", name="Done").click()
        card = section.locator(".webhook")
        await expect(card).to_have_count(1)
        await expect(card.locator("h3")).to_have_text("Ops hook")
        await expect(card.locator(".webhook-url code")).to_have_text(receiver.url("/first"))

        # Edit: the dialog starts from the current values; the card shows the new ones.
        await card.get_by_role("button", name="Edit").click()
        edit = page.locator("dialog", has_text="Edit Ops hook")
        url_box = edit.get_by_label("URL", exact=True)
        name_box = edit.get_by_label("Name (optional)")
        await expect(url_box).to_have_value(receiver.url("/first"))
        await expect(name_box).to_have_value("Ops hook")
        await url_box.fill(receiver.url("/edited"))
        await name_box.fill("Ops hook (edited)")
        assert await w.unlabelled() == []
        await edit.get_by_role("button", name="Save").click()
        await expect(page.locator(".toast", has_text="Endpoint saved")).to_have_count(1)
        await expect(card.locator("h3")).to_have_text("Ops hook (edited)")
        await expect(card.locator(".webhook-url code")).to_have_text(receiver.url("/edited"))
        await card.scroll_into_view_if_needed()
        await w.shot(shots, "23-webhook-edited")
        status, body = await api_status(srv, "/api/v1/webhooks", **bearer(key))
        assert status == 200, body
        [stored] = body["webhooks"]
        assert (stored["name"], stored["url"]) == ("Ops hook (edited)", receiver.url("/edited"))

        # Rotate with no overlap: the new secret is shown once and alone signs from now on.
        await card.get_by_role("button", name="Rotate secret").click()
        rotate = page.locator("dialog", has_text="Rotate the signing secret of Ops hook (edited)")
        await rotate.get_by_label("Overlap with the old secret").select_option("0")
        await rotate.get_by_role("button", name="Rotate").click()
        fresh = page.locator("dialog", has_text="New signing secret")
        new_secret = (await fresh.locator("code").text_content() or "").strip()
        assert new_secret.startswith("whsec_")
        assert new_secret != old_secret
        await w.shot(shots, "24-webhook-new-secret")
        await fresh.get_by_role("button", name="Done").click()
        await expect(page.locator("dialog")).to_have_count(0)
        facts = card.locator("p.muted.small", has_text="secret ")
        await expect(facts).not_to_contain_text(f"secret {stored['secret_prefix']}…")
        shown = re.search(r"secret (\S+)…", await facts.text_content() or "")
        assert shown is not None
        assert new_secret.startswith(shown.group(1))
        assert new_secret not in (await page.locator("body").text_content() or "")

        # A test sent from the page reaches the edited URL, signed with the new secret only.
        await card.get_by_role("button", name="Send test").click()
        outcome = card.locator(".outcome[data-result=ok]")
        await outcome.wait_for()
        assert (await outcome.text_content() or "").startswith("Delivered: HTTP 204 in")
        [got] = await receiver.wait_for(lambda got: len(got) >= 1)
        assert got.path == "/edited"
        assert got.verify(new_secret)["type"] == "alert.test"
        with pytest.raises(WebhookVerificationError):
            got.verify(old_secret)
        assert receiver.at("/first") == []
        await card.scroll_into_view_if_needed()
        await w.shot(shots, "25-webhook-tested-after-rotation")
        assert await w.unlabelled() == []
        await w.assert_clean()
        await w.context.close()


async def test_the_export_link_downloads_the_accounts_data(
    chromium: Path, srv: ServerUnderTest[SystemClock], shots: Path
) -> None:
    names = ("export-node-a", "export-node-b")
    email, key, refs = await account_with_nodes(srv, names)
    async with launched(chromium) as browser:
        w = await Watched.open(browser, srv.url, accept_downloads=True)
        page = w.page
        await w.sign_in(email)
        await page.goto(srv.url + "/#/settings?s=data")
        link = page.locator("#s-data").get_by_role("link", name="Download my data (JSON)")
        await link.wait_for()
        await w.shot(shots, "26-settings-data")
        async with page.expect_download() as info:
            await link.click()
        download = await info.value
        assert download.suggested_filename == "oneconnect-export.json", download.suggested_filename
        assert await download.failure() is None
        saved = await download.path()
        text = await asyncio.to_thread(Path(saved).read_text, encoding="utf-8")
        exported = json.loads(text)
        assert exported["account"]["email"] == email
        assert sorted(n["name"] for n in exported["nodes"]) == sorted(names)
        assert sorted(n["id"] for n in exported["nodes"]) == sorted(r.id for r in refs)
        assert exported["export"]["account_id"] == refs[0].account_id
        assert key not in text  # credentials are exported as hashes at most, never the key
        # Still on the settings page, still signed in.
        assert page.url.endswith("#/settings?s=data")
        await page.locator("#s-plan").wait_for()
        assert await w.unlabelled() == []
        await w.assert_clean()
        await w.context.close()


async def test_a_resolved_alert_is_listed_with_its_severity_and_node(
    chromium: Path, srv: ServerUnderTest[SystemClock], shots: Path
) -> None:
    from playwright.async_api import expect

    email, _, refs = await account_with_nodes(srv, ("edge-1", "edge-2"))
    assert srv.app is not None
    rng = random.Random(3)
    for ref in refs:
        connect(srv.live, ref)
        feed(srv.live, ref, 1, rng)
    dispatch = srv.app[DISPATCH]
    fired = alert_event(1, rule="disk_full", severity="critical", summary="disk is 97 % full")
    assert await dispatch.submit(refs[0], fired)
    resolved = alert_event(
        2, rule="disk_full", severity="critical", status="resolved", summary="disk is fine"
    )
    assert await dispatch.submit(refs[0], resolved)
    still = alert_event(3, severity="warning", fingerprint="00000000000000bb")
    assert await dispatch.submit(refs[1], still)

    async with launched(chromium) as browser:
        w = await Watched.open(browser, srv.url)
        page = w.page
        await w.sign_in(email)
        await page.goto(srv.url + "/#/alerts")
        items = page.locator(".alerts-list .alert")
        # Firing (the default): only edge-2's alert; edge-1's is over.
        await expect(items).to_have_count(1)
        await expect(items.first).to_have_attribute("data-status", "firing")
        await expect(items.first.locator(".alert-node")).to_have_text("edge-2")

        resolved_tab = page.locator(".segmented button[data-key=resolved]")
        await resolved_tab.click()
        await expect(resolved_tab).to_have_attribute("aria-pressed", "true")
        done = page.locator(".alerts-list .alert[data-status=resolved]")
        await expect(done).to_have_count(1)
        await expect(items).to_have_count(1)  # nothing firing in the resolved list
        await expect(done).to_have_attribute("data-severity", "critical")
        await expect(done).to_have_attribute("data-rule", "disk_full")
        await expect(done.locator(".sev")).to_have_text("Critical")
        await expect(done.locator(".alert-status")).to_have_text("Resolved")
        await expect(done.locator(".alert-summary")).to_have_text("disk is fine")
        node_link = done.locator(".alert-node")
        await expect(node_link).to_have_text("edge-1")
        assert await node_link.get_attribute("href") == f"#/nodes/{refs[0].id}"
        await expect(page.locator(".alerts-view .note")).to_contain_text("since the server")
        assert await w.unlabelled() == []
        await w.shot(shots, "27-alerts-resolved")

        # The severity filter applies to the resolved list too.
        await page.select_option("#alert-severity", "warning")
        await expect(page.locator(".alerts-list .empty-line")).to_have_text("No alerts here.")
        await page.select_option("#alert-severity", "all")
        await expect(done).to_have_count(1)

        # All: both, the firing one first.
        await page.locator(".segmented button[data-key=all]").click()
        await expect(items).to_have_count(2)
        statuses = await items.evaluate_all("all => all.map(e => e.dataset.status)")
        assert statuses == ["firing", "resolved"]

        # The node link opens the node.
        await page.locator(".segmented button[data-key=resolved]").click()
        await expect(items).to_have_count(1)
        await done.locator(".alert-node").click()
        await expect(page.locator("#node-title")).to_have_text("edge-1")
        assert page.url.endswith(f"#/nodes/{refs[0].id}")
        await w.assert_clean()
        await w.context.close()
