"""Webhook delivery through the real server: the real agent stream client sends events, the
server dispatches them to endpoints made through the API, a loopback receiver records what
arrives, and the ``standardwebhooks`` library checks every signature."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from agent.outbox import Outbox
from server.clock import FakeClock
from server.keys import STATS
from server.storage.store import Store
from tests.server.streamkit import (
    agent_client,
    agent_event,
    event,
    eventually,
    make_account,
    make_node,
    running,
)
from tests.server.webhooks.hookkit import call, create_hook, hook_server, sending, sink
from tests.server.webhooks.receiver import Receiver, Reply

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"


async def test_an_alert_arrives_signed_with_its_facts(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store, plan="business")
        node, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url("/generic"))
        async with sending(srv, token) as send:
            await send(event(1))
        [got] = rx.got
        payload: Any = got.verify(hook["secret"])
        assert got.webhook_id.startswith("msg_")
        assert got.headers["content-type"] == "application/json"
        assert payload["type"] == "alert.firing"
        data = payload["data"]
        assert data["id"] == "evt-00000001"
        assert data["node"] == {"id": node.id, "name": node.name}
        assert (data["rule"], data["severity"], data["status"]) == ("cpu_high", "warning", "firing")
        assert (data["value"], data["threshold"]) == (97.0, 90.0)


async def test_every_format_reaches_its_receiver_in_its_shape(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store, plan="business")
        _, token = await make_node(store, account)
        secrets: dict[str, str] = {}
        for fmt in ("generic", "slack", "discord", "teams", "pagerduty", "alertmanager"):
            extra = {"routing_key": ROUTING_KEY} if fmt == "pagerduty" else {}
            made = await create_hook(srv, key, url=rx.url(f"/{fmt}"), format=fmt, **extra)
            secrets[fmt] = made["secret"]
        async with sending(srv, token) as send:
            await send(event(1))
            await send(event(2, status="resolved"))
        for fmt, secret in secrets.items():
            firing, resolved = rx.at(f"/{fmt}")
            assert firing.webhook_id != resolved.webhook_id
            first: Any = firing.verify(secret)
            last: Any = resolved.verify(secret)
            if fmt == "generic":
                assert (first["type"], last["type"]) == ("alert.firing", "alert.resolved")
            elif fmt == "slack":
                assert first["text"]
                assert first["blocks"]
            elif fmt == "discord":
                assert first["embeds"][0]["color"] != last["embeds"][0]["color"]
                assert first["allowed_mentions"] == {"parse": []}
            elif fmt == "teams":
                card = first["attachments"][0]
                assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
                assert card["content"]["type"] == "AdaptiveCard"
            elif fmt == "pagerduty":
                assert (first["event_action"], last["event_action"]) == ("trigger", "resolve")
                assert first["dedup_key"] == last["dedup_key"]
                assert first["routing_key"] == ROUTING_KEY
            else:
                assert (first["version"], first["status"], last["status"]) == (
                    "4",
                    "firing",
                    "resolved",
                )
                assert first["alerts"][0]["labels"]["alertname"] == "cpu_high"


async def test_receiver_down_then_up_every_alert_arrives_exactly_once(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        await rx.down()  # connections refused from now on
        outbox = Outbox()
        client = agent_client(srv.url, token, outbox=outbox)
        events = [event(n, fingerprint=f"{n:016x}") for n in range(1, 6)]
        async with running(client):
            for e in events:
                client.add_event(agent_event(e))
            await asyncio.sleep(0.4)  # several attempts fail meanwhile
            assert len(outbox) == 5  # nothing is acked while its delivery is pending
            await rx.up()
            await eventually(lambda: len(outbox) == 0, timeout=10)
        ids = [r.verify(hook["secret"])["data"]["id"] for r in rx.got]
        assert sorted(ids) == [e.id for e in events]  # each once, none lost
        assert len({r.webhook_id for r in rx.got}) == 5


async def test_retries_keep_the_webhook_id_and_sign_each_attempt(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        rx.script.extend([Reply(503), Reply(500), Reply(408)])
        async with sending(srv, token) as send:
            await send(event(1))
        assert len(rx.got) == 4
        assert len({r.webhook_id for r in rx.got}) == 1
        assert all(r.verify(hook["secret"]) for r in rx.got)
        _, shown = await call(srv, "GET", f"/api/v1/webhooks/{hook['webhook']['id']}", key)
        health = shown["webhook"]["health"]
        assert [a["outcome"] for a in health["last_attempts"]] == [
            "delivered",
            "retry",
            "retry",
            "retry",
        ]
        assert health["status"] == "healthy"
        assert health["consecutive_failures"] == 0


async def test_429_retry_after_is_honoured(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        await create_hook(srv, key, url=rx.url())
        rx.script.append(Reply(429, headers={"Retry-After": "1"}))
        async with sending(srv, token) as send:
            await send(event(1))
        first, second = rx.got
        assert second.at - first.at >= 0.95  # not the 0.05 s backoff
        assert first.webhook_id == second.webhook_id


async def test_a_4xx_is_final_after_one_attempt_and_the_event_is_acked(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        rx.script.append(Reply(400, body=b"bad payload"))
        async with sending(srv, token) as send:
            await send(event(1))
        assert len(rx.got) == 1
        _, shown = await call(srv, "GET", f"/api/v1/webhooks/{hook['webhook']['id']}", key)
        [attempt] = shown["webhook"]["health"]["last_attempts"]
        assert (attempt["status"], attempt["outcome"]) == (400, "final")
        assert shown["webhook"]["enabled"] is True


async def test_410_disables_the_endpoint(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        rx.script.append(Reply(410))
        async with sending(srv, token) as send:
            await send(event(1))
            _, shown = await call(srv, "GET", f"/api/v1/webhooks/{hook['webhook']['id']}", key)
            assert shown["webhook"]["enabled"] is False
            assert "410" in shown["webhook"]["disabled_reason"]
            assert shown["webhook"]["health"]["status"] == "disabled"
            await send(event(2, fingerprint="00000000000000bb"))
        assert len(rx.got) == 1  # nothing more goes to a disabled endpoint


async def test_the_ack_waits_for_the_delivery(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        await create_hook(srv, key, url=rx.url())
        rx.script.append(Reply(200, delay=0.8))
        started = time.monotonic()
        async with sending(srv, token) as send:
            await send(event(1))
        assert time.monotonic() - started >= 0.8
        assert len(rx.got) == 1


async def test_filters_choose_endpoints_and_resolved_follows_its_firing(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store, plan="business")
        _, token = await make_node(store, account)
        other, _ = await make_node(store, account, name="vpn-2")
        warn = await create_hook(srv, key, url=rx.url("/warn"), filters={"severities": ["warning"]})
        await create_hook(srv, key, url=rx.url("/crit"), filters={"severities": ["critical"]})
        await create_hook(srv, key, url=rx.url("/other"), filters={"nodes": [other.id]})
        await create_hook(srv, key, url=rx.url("/rule"), filters={"rules": ["disk_full"]})
        await create_hook(srv, key, url=rx.url("/all"))
        async with sending(srv, token) as send:
            await send(event(1))
            # The filters change while the alert fires: its resolved still goes where it went.
            await call(
                srv,
                "PATCH",
                f"/api/v1/webhooks/{warn['webhook']['id']}",
                key,
                {"filters": {"severities": ["critical"]}},
                expect=200,
            )
            await send(event(2, status="resolved"))
        paths = sorted(r.path for r in rx.got)
        assert paths == ["/all", "/all", "/warn", "/warn"]


async def test_the_same_event_is_never_delivered_twice(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        await create_hook(srv, key, url=rx.url())
        async with sending(srv, token) as send:
            await send(event(1))
        async with sending(srv, token) as send:  # a new connection resending the same id
            await send(event(1))
        assert len(rx.got) == 1


async def test_a_resend_while_delivering_waits_for_the_same_delivery(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        await create_hook(srv, key, url=rx.url())
        rx.script.append(Reply(204, delay=0.6))
        outbox = Outbox()
        first = agent_client(srv.url, token, outbox=outbox)
        async with running(first):
            first.add_event(agent_event(event(1)))
            await rx.wait_for(lambda got: len(got) == 1)
        # The first connection ended before the ack; the resend waits for that delivery.
        assert "evt-00000001" in outbox
        async with running(agent_client(srv.url, token, outbox=outbox)):
            await eventually(lambda: len(outbox) == 0, timeout=5)
        assert len(rx.got) == 1


async def test_reminders_of_a_long_firing_alert(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock, webhook_repeat_interval=3600) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        async with sending(srv, token) as send:
            await send(event(1))
            assert await sink(srv).remind_due() == 0  # not due yet
            clock.advance(3601)
            assert await sink(srv).remind_due() == 1
            await rx.wait_for(lambda got: len(got) == 2)
            assert await sink(srv).remind_due() == 0  # the next one is an interval away
            await send(event(2, status="resolved"))
            clock.advance(3601)
            assert await sink(srv).remind_due() == 0  # resolved: no more reminders
        first, reminder, resolved = (r.verify(hook["secret"]) for r in rx.got)
        assert reminder["data"]["id"] == first["data"]["id"]
        assert (first["data"]["repeat"], reminder["data"]["repeat"]) == (0, 1)
        assert len({r.webhook_id for r in rx.got}) == 3
        assert resolved["type"] == "alert.resolved"


async def test_an_endpoint_failing_long_turns_unhealthy_then_disabled(
    store: Store, clock: FakeClock
) -> None:
    settings = {
        "webhook_max_attempts": 2,
        "webhook_unhealthy_after": 60,
        "webhook_disable_after": 3600,
    }
    async with hook_server(store, clock, **settings) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        path = f"/api/v1/webhooks/{hook['webhook']['id']}"
        rx.default = Reply(500)
        async with sending(srv, token) as send:
            await send(event(1))  # ends final after 2 attempts
            _, shown = await call(srv, "GET", path, key)
            assert shown["webhook"]["health"]["status"] == "healthy"  # failing, not for long
            assert shown["webhook"]["health"]["consecutive_failures"] == 2
            clock.advance(61)
            _, shown = await call(srv, "GET", path, key)
            assert shown["webhook"]["health"]["status"] == "unhealthy"
            clock.advance(3600)
            await send(event(2, fingerprint="00000000000000bb"))
            _, shown = await call(srv, "GET", path, key)
        assert shown["webhook"]["enabled"] is False
        assert "failing for more than" in shown["webhook"]["disabled_reason"]
        assert shown["webhook"]["health"]["status"] == "disabled"
        assert len(rx.got) == 3  # the disabling attempt was the last


async def test_a_name_resolving_to_loopback_is_blocked_without_a_connection(
    store: Store, clock: FakeClock
) -> None:
    """Default settings (no allow list): ``localhost`` resolves to 127.0.0.1, which is
    blocked before any connection is made; the event still ends (final) and is acked."""
    async with hook_server(store, clock, webhook_allow_networks=[]) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        status, refused = await call(
            srv, "POST", "/api/v1/webhooks", key, {"url": rx.url()}
        )  # an IP literal is refused when it is stored
        assert status == 422
        assert refused["error"]["field"] == "url"
        hook = await create_hook(srv, key, url=f"http://localhost:{rx.port}/hook")
        async with sending(srv, token) as send:
            await send(event(1))
        assert rx.got == []
        _, shown = await call(srv, "GET", f"/api/v1/webhooks/{hook['webhook']['id']}", key)
        [attempt] = shown["webhook"]["health"]["last_attempts"]
        assert attempt["outcome"] == "final"
        assert attempt["status"] is None
        assert "loopback" in attempt["detail"]


async def test_a_server_restart_mid_delivery_loses_nothing(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        rx.default = Reply(503)
        outbox = Outbox()
        client = agent_client(srv.url, token, outbox=outbox)
        async with running(client):
            client.add_event(agent_event(event(1)))
            await rx.wait_for(lambda got: len(got) >= 2)  # being retried
            await srv.restart()  # deliveries cancelled: the event is not acked
            assert "evt-00000001" in outbox
            rx.default = Reply(204)
            await eventually(lambda: len(outbox) == 0, timeout=10)
        assert {r.webhook_id for r in rx.got} == {rx.got[0].webhook_id}  # one id throughout
        assert rx.got[-1].verify(hook["secret"])["data"]["id"] == "evt-00000001"


async def test_node_down_goes_out_as_a_webhook(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        node, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url())
        async with sending(srv, token) as send:
            await send(event(1))
        await rx.wait_for(lambda got: len(got) == 1)
        assert srv.app is not None
        detector = srv.detector
        clock.advance(3600)
        assert await detector.check(clock.monotonic()) == 1
        got = await rx.wait_for(lambda got: len(got) == 2)
        payload: Any = got[1].verify(hook["secret"])
        assert payload["data"]["rule"] == "node_down"
        assert payload["data"]["node"]["id"] == node.id


async def test_delivery_figures_at_metrics(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        await create_hook(srv, key, url=rx.url())
        rx.script.append(Reply(503))
        async with sending(srv, token) as send:
            await send(event(1))
        async with aiohttp.ClientSession() as session, session.get(srv.url + "/metrics") as r:
            text = await r.text()
        assert srv.app is not None
        stats = srv.app[STATS]
        assert stats.value("webhook_attempts", format="generic", outcome="retry") == 1
        assert stats.value("webhook_attempts", format="generic", outcome="delivered") == 1
        assert stats.value("webhook_deliveries", outcome="delivered") == 1
        assert "oneconnect_server_webhook_attempts_total" in text
        assert "oneconnect_server_webhook_pending 0.0" in text


@pytest.mark.parametrize("fmt", ["slack", "discord"])
async def test_hostile_node_names_stay_text(store: Store, clock: FakeClock, fmt: str) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account, name="<!channel> <@everyone> [x](http://e)")
        hook = await create_hook(srv, key, url=rx.url(), format=fmt)
        async with sending(srv, token) as send:
            await send(event(1))
        body: Any = rx.got[0].verify(hook["secret"])
        if fmt == "slack":  # mrkdwn texts escaped; plain_text (the header) is never parsed
            marked = [body["text"]] + [
                b["text"]["text"]
                for b in body["blocks"]
                if isinstance(b.get("text"), dict) and b["text"].get("type") == "mrkdwn"
            ]
            assert all("<!channel>" not in t and "&lt;!channel&gt;" in t for t in marked[:1])
            assert not any("<!channel>" in t or "<@everyone>" in t for t in marked)
        else:
            assert body["allowed_mentions"] == {"parse": []}
            values = [f["value"] for f in body["embeds"][0]["fields"]] + [
                body["embeds"][0].get("description", "")
            ]
            assert not any("](http" in v for v in values)  # markdown: no masked link


async def test_a_retry_goes_to_the_endpoint_as_it_is_now(store: Store, clock: FakeClock) -> None:
    """The developer moves a failing endpoint (URL, format) and rotates its secret without a
    grace window while a delivery is being retried: the next attempts are sent to the new URL,
    in the new format and signed with the new secret only — the same webhook-id throughout."""
    async with hook_server(store, clock, webhook_max_attempts=20) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        hook = await create_hook(srv, key, url=rx.url("/old"))
        hook_id = hook["webhook"]["id"]
        rx.script.extend([Reply(503)] * 200)
        outbox = Outbox()
        client = agent_client(srv.url, token, outbox=outbox)
        async with running(client):
            client.add_event(agent_event(event(1)))
            await eventually(lambda: len(rx.at("/old")) >= 2, timeout=10)
            await call(
                srv,
                "PATCH",
                f"/api/v1/webhooks/{hook_id}",
                key,
                {"url": rx.url("/new"), "format": "slack"},
                expect=200,
            )
            _, rotated = await call(
                srv, "POST", f"/api/v1/webhooks/{hook_id}/secret", key, {"grace_seconds": 0}
            )
            rx.script.clear()  # the new URL answers 204
            await eventually(lambda: len(outbox) == 0, timeout=10)
        old, new = rx.at("/old"), rx.at("/new")
        assert new
        assert new[-1].status == 204
        assert rx.got[-1] is new[-1]  # nothing went to the old URL after the change
        assert {r.webhook_id for r in rx.got} == {old[0].webhook_id}
        for r in old:
            assert r.verify(hook["secret"])["type"] == "alert.firing"  # generic, as it was
        payload = new[-1].verify(rotated["secret"])
        assert payload["text"]  # slack, as it is now
        assert payload["blocks"]
        with pytest.raises(WebhookVerificationError):
            new[-1].verify(hook["secret"])  # no grace window: the old secret signs nothing
        assert len(new[-1].headers["webhook-signature"].split()) == 1


async def test_reminders_default_to_every_four_hours(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:  # the default interval
        assert sink(srv).repeat_interval == 4 * 3600
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        await create_hook(srv, key, url=rx.url())
        async with sending(srv, token) as send:
            await send(event(1))
            clock.advance(4 * 3600 - 5)
            assert await sink(srv).remind_due() == 0
            clock.advance(10)
            assert await sink(srv).remind_due() == 1
            await rx.wait_for(lambda got: len(got) == 2)
        assert rx.got[1].json["data"]["repeat"] == 1


async def test_a_repeat_interval_of_zero_sends_no_reminders(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock, webhook_repeat_interval=0) as srv, Receiver() as rx:
        account, key = await make_account(store)
        _, token = await make_node(store, account)
        await create_hook(srv, key, url=rx.url())
        async with sending(srv, token) as send:
            await send(event(1))
            for _ in range(3):
                clock.advance(7 * 86400)
                assert await sink(srv).remind_due() == 0
            await asyncio.sleep(0.2)
        assert len(rx.got) == 1  # the firing notice only
