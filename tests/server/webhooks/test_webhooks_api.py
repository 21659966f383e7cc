"""The webhook endpoints API over real HTTP on 127.0.0.1, on both databases: create (secret
shown once), read, change, delete, secret rotation with a grace window, test sends, plan
limits, tenant isolation on every route and hostile input. Deliveries go to a real loopback
receiver and every signature is checked with the ``standardwebhooks`` library."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from server.clock import FakeClock
from server.storage.store import Store
from server.webhooks.signing import new_secret
from tests.server.accounts_kit import all_rows, text_in_database
from tests.server.streamkit import ServerUnderTest, event, make_account, make_node
from tests.server.webhooks.hookkit import call, create_hook, hook_server, sending
from tests.server.webhooks.receiver import Receiver, Reply

HOOKS = "/api/v1/webhooks"
WEBHOOK_FIELDS = {
    "id",
    "name",
    "url",
    "format",
    "enabled",
    "disabled_reason",
    "filters",
    "routing_key_set",
    "secret_prefix",
    "previous_secret_expires_at",
    "created_at",
    "updated_at",
    "health",
}
ROUTING_KEY = "R0uting_key-0123456789abcdef"
OTHER_ID = "0123456789abcdef" * 2
"""A well-formed id no endpoint has."""


def hook_path(hook_id: str, tail: str = "") -> str:
    return f"{HOOKS}/{hook_id}{tail}"


async def raw(
    srv: ServerUnderTest[Any],
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request exactly as given: (status, response headers, JSON body or None)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, srv.url + path, headers=headers or {}, data=data) as response,
    ):
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, dict(response.headers), body


async def get_hook(srv: ServerUnderTest[Any], key: str, hook_id: str) -> dict[str, Any]:
    _, data = await call(srv, "GET", hook_path(hook_id), key, expect=200)
    hook: dict[str, Any] = data["webhook"]
    return hook


async def try_hook(srv: ServerUnderTest[Any], key: str, hook_id: str) -> dict[str, Any]:
    _, data = await call(srv, "POST", hook_path(hook_id, "/test"), key, expect=200)
    assert isinstance(data, dict)
    return data


def field_of(answer: Any) -> Any:
    return answer["error"]["field"]


# -- create, read, no secret leaks ------------------------------------------------------------
async def test_create_returns_the_secret_once_and_reads_never_do(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url=rx.url("/a"))
        secret = created["secret"]
        hook = created["webhook"]
        assert set(created) == {"webhook", "secret"}
        assert secret.startswith("whsec_")
        assert set(hook) == WEBHOOK_FIELDS
        assert hook["name"] == "127.0.0.1"  # the URL's host
        assert hook["format"] == "generic"
        assert hook["enabled"] is True
        assert hook["disabled_reason"] is None
        assert hook["url"] == rx.url("/a")
        assert hook["filters"] == {"severities": [], "nodes": [], "rules": []}
        assert hook["routing_key_set"] is False
        assert hook["secret_prefix"] == secret[:12]
        assert hook["previous_secret_expires_at"] is None
        assert hook["created_at"] == hook["updated_at"] == clock.time()
        assert hook["health"]["status"] == "healthy"
        assert hook["health"]["last_attempts"] == []
        assert len(hook["id"]) == 32

        # The secret works: a test send verifies with it.
        result = await try_hook(srv, key, hook["id"])
        assert result["delivered"] is True
        [got] = rx.got
        payload: Any = got.verify(secret)
        assert got.webhook_id == result["webhook_id"]
        assert payload["type"] == "alert.test"
        assert payload["data"]["rule"] == "oneconnect_test"
        with pytest.raises(WebhookVerificationError):
            got.verify(new_secret())  # and only it

        # No read shows it.
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        _, one = await call(srv, "GET", hook_path(hook["id"]), key, expect=200)
        _, patched = await call(srv, "PATCH", hook_path(hook["id"]), key, {"name": "renamed"})
        for answer in (listed, one, patched):
            text = json.dumps(answer)
            assert secret not in text
            assert secret[12:] not in text
            assert '"secret"' not in text
        assert [h["id"] for h in listed["webhooks"]] == [hook["id"]]
        assert one["webhook"]["secret_prefix"] == secret[:12]
        assert patched["webhook"]["name"] == "renamed"
        assert patched["webhook"]["secret_prefix"] == secret[:12]


async def test_name_defaults_to_the_host_and_can_be_given(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        # Hostnames are not resolved when stored, only on delivery.
        named = await create_hook(srv, key, url="https://hooks.example.com/in/abc?x=1")
        assert named["webhook"]["name"] == "hooks.example.com"
        given = await create_hook(srv, key, url="https://hooks.example.com/b", name="Ops 🚨")
        assert given["webhook"]["name"] == "Ops 🚨"
        assert named["secret"] != given["secret"]
        for hostile in ("<script>alert(1)</script>", "x'); DROP TABLE webhook_endpoints;--"):
            made = await create_hook(srv, key, url="https://c.example.com/", name=hostile)
            assert (await get_hook(srv, key, made["webhook"]["id"]))["name"] == hostile
        host = ".".join(["a" * 40] * 3) + ".example.com"
        long = await create_hook(srv, key, url=f"https://{host}/")
        assert long["webhook"]["name"] == host[:64]


async def test_routing_key_is_never_returned(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(
            srv,
            key,
            url="https://events.example.com/v2",
            format="pagerduty",
            routing_key=ROUTING_KEY,
        )
        hook_id = created["webhook"]["id"]
        assert created["webhook"]["routing_key_set"] is True
        assert created["webhook"]["format"] == "pagerduty"
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        _, one = await call(srv, "GET", hook_path(hook_id), key, expect=200)
        _, patched = await call(srv, "PATCH", hook_path(hook_id), key, {"name": "pd"}, expect=200)
        _, rotated = await call(srv, "POST", hook_path(hook_id, "/secret"), key, expect=201)
        for answer in (created, listed, one, patched, rotated):
            text = json.dumps(answer)
            assert ROUTING_KEY not in text
            assert '"routing_key"' not in text
        assert one["webhook"]["routing_key_set"] is True


async def test_list_is_per_account_in_creation_order(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, a = await make_account(store, plan="pro")
        _, b = await make_account(store, plan="pro")
        first = await create_hook(srv, a, url="https://one.example.com/")
        clock.advance(1)
        second = await create_hook(srv, a, url="https://two.example.com/")
        _, listed = await call(srv, "GET", HOOKS, a, expect=200)
        ids = [h["id"] for h in listed["webhooks"]]
        assert ids == [first["webhook"]["id"], second["webhook"]["id"]]
        assert await call(srv, "GET", HOOKS, b, expect=200) == (200, {"webhooks": []})


# -- tenant isolation and authentication --------------------------------------------------------
def _item_routes(srv: ServerUnderTest[Any]) -> list[tuple[str, str]]:
    """Every (method, path) the app registers under /api/v1/webhooks/{id}."""
    assert srv.app is not None
    found = set()
    for resource in srv.app.router.resources():
        if resource.canonical.startswith("/api/v1/webhooks/{id}"):
            for route in resource:
                if route.method not in ("HEAD", "*"):
                    found.add((route.method, resource.canonical))
    return sorted(found)


async def test_another_accounts_endpoint_is_404_on_every_route(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, a = await make_account(store, plan="pro")
        _, b = await make_account(store, plan="pro")
        created = await create_hook(srv, a, url=rx.url("/a"), name="a-hook")
        hook_id = created["webhook"]["id"]
        routes = _item_routes(srv)
        assert routes == [
            ("DELETE", "/api/v1/webhooks/{id}"),
            ("GET", "/api/v1/webhooks/{id}"),
            ("PATCH", "/api/v1/webhooks/{id}"),
            ("POST", "/api/v1/webhooks/{id}/secret"),
            ("POST", "/api/v1/webhooks/{id}/test"),
        ]
        for method, template in routes:
            body: dict[str, Any] | None = None
            if template.endswith("/secret"):
                body = {"grace_seconds": 0}
            if method == "PATCH":
                body = {"name": "stolen", "url": "https://evil.example.com/"}
            for path_id in (hook_id, OTHER_ID):
                status, answer = await call(srv, method, template.replace("{id}", path_id), b, body)
                assert status == 404, (method, template, answer)
                assert answer["error"]["code"] == "not_found"
        assert rx.got == []  # no test was sent on b's behalf
        assert await call(srv, "GET", HOOKS, b, expect=200) == (200, {"webhooks": []})
        # A's endpoint is untouched, its secret still signs.
        hook = await get_hook(srv, a, hook_id)
        assert (hook["name"], hook["url"]) == ("a-hook", rx.url("/a"))
        assert hook["secret_prefix"] == created["secret"][:12]
        await try_hook(srv, a, hook_id)
        rx.got[-1].verify(created["secret"])


BAD_IDS = ["not-hex", "A" * 32, "0" * 31, "0" * 33, "0" * 3000, "' OR '1'='1", "%00", "%2e%2e"]


async def test_malformed_ids_are_404(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        wrong = []
        for bad_id in [*BAD_IDS, "ü" * 32, "0" * 32]:
            for method, tail, body in (
                ("GET", "", None),
                ("PATCH", "", {"name": "x"}),
                ("DELETE", "", None),
                ("POST", "/secret", None),
                ("POST", "/test", None),
            ):
                status, answer = await call(srv, method, hook_path(bad_id, tail), key, body)
                if status != 404:
                    wrong.append((bad_id[:40], method, tail, status, answer))
        assert wrong == []


async def test_no_or_wrong_credentials_are_401(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url="https://a.example.com/"))["webhook"]["id"]
        wrong_key = "oc_key_" + "A" * 43
        cases = [
            ("GET", HOOKS),
            ("POST", HOOKS),
            ("GET", hook_path(hook_id)),
            ("PATCH", hook_path(hook_id)),
            ("DELETE", hook_path(hook_id)),
            ("POST", hook_path(hook_id, "/secret")),
            ("POST", hook_path(hook_id, "/test")),
        ]
        body = json.dumps({"url": "https://evil.example.com/", "grace_seconds": 0}).encode()
        for method, path in cases:
            for headers in (
                {},
                {"Authorization": f"Bearer {wrong_key}"},
                {"Authorization": f"Basic {key}"},
            ):
                status, got, answer = await raw(srv, method, path, headers=headers, data=body)
                assert status == 401, (method, path, headers, answer)
                assert answer["error"]["code"] == "unauthorized"
                assert "WWW-Authenticate" in got
        # Nothing changed.
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        [hook] = listed["webhooks"]
        assert hook["url"] == "https://a.example.com/"
        assert hook["updated_at"] == hook["created_at"]


# -- validation ----------------------------------------------------------------------------------
BAD_URLS = [
    "ftp://127.0.0.1/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/",
    "javascript:alert(1)",
    "//127.0.0.1/hook",
    "http://user:pass@127.0.0.1/hook",
    "https://token@hooks.example.com/",
    "http://10.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:10.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/",
    "http://100.64.0.1/hook",
    "http://192.168.1.1/",
    "http://[fe80::1]/",
    "http://[::1]/",
    "http://0.0.0.0/",
    "http://2130706433/",  # 127.0.0.1 in legacy numeric forms
    "http://127.1/",
    "http://127.0.0.1./",
    "http://127.0.0.1:0/",
    "http://127.0.0.1:99999/",
    "http://exa mple.com/",
    " http://127.0.0.1/hook",
    "http://127.0.0.1/hook ",
    "http://127.0.0.1/ho\tok",
    "http://127.0.0.1/hook\n",
    "http://127.0.0.1/ho\rok",
    "http://127.0.0.1/ho\x00ok",
    "http://127.0.0.1/\x7fhook",
    "http://127.0.0.1/\u00a0hook",
    "http://127.0.0.1/\u202ehook",
    "http://127.0.0.1/" + "a" * 2032,  # 2049 characters
    "http:/",
    "",
]


async def test_bad_urls_are_422_on_create_and_patch(store: Store, clock: FakeClock) -> None:
    """Schemes other than http(s), credentials, blocked IP literals (though 127.0.0.0/8 is
    allowed here), control characters, over 2048 characters: 422 naming ``url``."""
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        good = "https://good.example.com/hook"
        hook_id = (await create_hook(srv, key, url=good))["webhook"]["id"]
        wrong = []
        for url in BAD_URLS:
            for method, path in (("POST", HOOKS), ("PATCH", hook_path(hook_id))):
                status, answer = await call(srv, method, path, key, {"url": url})
                if status != 422 or answer["error"] != {
                    "code": "invalid",
                    "message": answer["error"]["message"],
                    "field": "url",
                }:
                    wrong.append((method, url[:60], status, answer))
        assert wrong == []
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        [hook] = listed["webhooks"]
        assert hook["url"] == good
        assert hook["updated_at"] == hook["created_at"]


@pytest.mark.parametrize("url", ["http://127.0.0.1/ho ok", "http://127.0.0.1/hook?q=a b"])
async def test_urls_with_inner_spaces_are_422(store: Store, clock: FakeClock, url: str) -> None:
    """The API says a URL "must not contain spaces": an inner space is refused like an outer
    one, not stored as given (it is not a valid URL, RFC 3986)."""
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        status, answer = await call(srv, "POST", HOOKS, key, {"url": url})
        assert status == 422, answer
        assert field_of(answer) == "url"
        assert (await call(srv, "GET", HOOKS, key))[1] == {"webhooks": []}


async def test_longest_url_is_accepted(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        url = "http://127.0.0.1/" + "a" * (2048 - len("http://127.0.0.1/"))
        assert len(url) == 2048
        created = await create_hook(srv, key, url=url)
        assert created["webhook"]["url"] == url


async def test_patch_to_a_blocked_url_changes_nothing(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url=rx.url("/a"), name="keep"))["webhook"]["id"]
        clock.advance(5)
        body = {"url": "http://169.254.169.254/", "name": "changed", "enabled": False}
        status, answer = await call(srv, "PATCH", hook_path(hook_id), key, body)
        assert status == 422
        assert field_of(answer) == "url"
        hook = await get_hook(srv, key, hook_id)
        assert (hook["url"], hook["name"], hook["enabled"]) == (rx.url("/a"), "keep", True)
        assert hook["updated_at"] == hook["created_at"]
        # The endpoint still delivers where it did.
        await try_hook(srv, key, hook_id)
        assert [r.path for r in rx.got] == ["/a"]


CREATE_422: list[tuple[dict[str, Any], str]] = [
    ({}, "url"),
    ({"url": None}, "url"),
    ({"url": 5}, "url"),
    ({"url": ["http://127.0.0.1/"]}, "url"),
    ({"url": "https://a.example.com/", "format": None}, "format"),
]
"""Bodies of a create (``url`` is required there) and the field named."""
BOTH_422: list[tuple[dict[str, Any], str]] = [
    ({"format": "smoke-signals"}, "format"),
    ({"format": "Generic"}, "format"),
    ({"format": "pagerduty"}, "routing_key"),
    ({"format": "pagerduty", "routing_key": "short"}, "routing_key"),
    ({"format": "pagerduty", "routing_key": "has space in it"}, "routing_key"),
    ({"format": "pagerduty", "routing_key": 12345678}, "routing_key"),
    ({"filters": {"severities": ["apocalyptic"]}}, "filters.severities.0"),
    ({"filters": {"severities": ["info", "Critical"]}}, "filters.severities.1"),
    ({"filters": {"severities": "critical"}}, "filters.severities"),
    ({"filters": {"nodes": ["not-a-node-id"]}}, "filters.nodes.0"),
    ({"filters": {"nodes": ["F" * 32]}}, "filters.nodes.0"),
    ({"filters": {"rules": ["bad rule name"]}}, "filters.rules.0"),
    ({"filters": {"rules": ["r" * 65]}}, "filters.rules.0"),
    ({"filters": {"owner": "me"}}, "filters.owner"),
    ({"filters": []}, "filters"),
    ({"name": ""}, "name"),
    ({"name": "n" * 65}, "name"),
    ({"name": "line\nbreak"}, "name"),
    ({"name": " "}, "name"),
    ({"enabled": "yes"}, "enabled"),
    ({"enabled": 1}, "enabled"),
    ({"secret": "whsec_" + "A" * 44}, "secret"),
    ({"routing_key_set": True}, "routing_key_set"),
    ({"id": OTHER_ID}, "id"),
    ({"account_id": OTHER_ID}, "account_id"),
    ({"x" * 500: 1}, "x" * 64),
]
"""Bodies invalid on create (with a good url) and on change, and the field named."""


async def test_invalid_fields_are_422(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        good = "https://a.example.com/"
        hook_id = (await create_hook(srv, key, url=good, name="keep"))["webhook"]["id"]
        wrong = []
        for method, path, body, field in [
            *(("POST", HOOKS, body, field) for body, field in CREATE_422),
            *(("POST", HOOKS, {"url": good, **body}, field) for body, field in BOTH_422),
            *(("PATCH", hook_path(hook_id), body, field) for body, field in BOTH_422),
        ]:
            status, answer = await call(srv, method, path, key, body)
            if status != 422 or answer["error"].get("field") != field:
                wrong.append((method, field, status, answer))
        assert wrong == []
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        [hook] = listed["webhooks"]
        assert (hook["name"], hook["format"], hook["enabled"]) == ("keep", "generic", True)
        assert hook["filters"] == {"severities": [], "nodes": [], "rules": []}
        assert hook["updated_at"] == hook["created_at"]
        # An empty change is not an error.
        await call(srv, "PATCH", hook_path(hook_id), key, {}, expect=200)


async def test_pagerduty_needs_a_routing_key_when_switching_on_patch(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url="https://a.example.com/"))["webhook"]["id"]
        path = hook_path(hook_id)
        status, answer = await call(srv, "PATCH", path, key, {"format": "pagerduty"})
        assert status == 422
        assert field_of(answer) == "routing_key"
        assert (await get_hook(srv, key, hook_id))["format"] == "generic"
        body = {"format": "pagerduty", "routing_key": ROUTING_KEY}
        _, changed = await call(srv, "PATCH", path, key, body, expect=200)
        assert changed["webhook"]["format"] == "pagerduty"
        assert changed["webhook"]["routing_key_set"] is True
        # The stored key carries over to later changes.
        _, renamed = await call(srv, "PATCH", path, key, {"name": "pd"}, expect=200)
        assert renamed["webhook"]["format"] == "pagerduty"


async def test_filters_round_trip_and_name_only_own_nodes(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        account, key = await make_account(store, plan="pro")
        other, _ = await make_account(store, plan="pro")
        mine, _ = await make_node(store, account, "mine")
        theirs, _ = await make_node(store, other, "theirs")
        filters = {"severities": ["critical", "warning"], "nodes": [mine.id], "rules": ["cpu_high"]}
        created = await create_hook(srv, key, url="https://a.example.com/", filters=filters)
        assert created["webhook"]["filters"] == filters
        hook_id = created["webhook"]["id"]

        for nodes in ([theirs.id], [mine.id, theirs.id], ["f" * 32]):
            body = {"url": "https://b.example.com/", "filters": {"nodes": nodes}}
            status, answer = await call(srv, "POST", HOOKS, key, body)
            assert status == 422, answer
            assert field_of(answer) == "filters.nodes"
            assert theirs.id not in json.dumps(answer)
            status, answer = await call(
                srv, "PATCH", hook_path(hook_id), key, {"filters": {"nodes": nodes}}
            )
            assert status == 422, answer
            assert field_of(answer) == "filters.nodes"
        assert (await get_hook(srv, key, hook_id))["filters"] == filters
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        assert len(listed["webhooks"]) == 1

        # Duplicates collapse; an empty filter matches everything.
        body = {"filters": {"nodes": [mine.id, mine.id]}}
        _, changed = await call(srv, "PATCH", hook_path(hook_id), key, body, expect=200)
        assert changed["webhook"]["filters"] == {"severities": [], "nodes": [mine.id], "rules": []}


MALFORMED: list[tuple[bytes, str]] = [
    (b"{", "application/json"),
    (b'{"url": "https://a.example.com/",}', "application/json"),
    (b"[]", "application/json"),
    (b'"https://a.example.com/"', "application/json"),
    (b"null", "application/json"),
    (b"42", "application/json"),
    (b'{"url": NaN}', "application/json"),
    (b"\xff\xfe{}", "application/json"),
    (b"[" * 100_000, "application/json"),
    (b"url=https://a.example.com/", "application/x-www-form-urlencoded"),
    (b'{"url": "https://a.example.com/"}', "text/plain"),
]


async def test_malformed_bodies_are_400(store: Store, clock: FakeClock) -> None:
    """Not JSON, JSON that is not an object, or not sent as JSON: 400 on every body route."""
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url="https://a.example.com/"))["webhook"]["id"]
        wrong = []
        for raw_body, content_type in MALFORMED:
            headers = {**_auth(key), "Content-Type": content_type}
            for method, path in (
                ("POST", HOOKS),
                ("PATCH", hook_path(hook_id)),
                ("POST", hook_path(hook_id, "/secret")),
            ):
                status, _, answer = await raw(srv, method, path, headers=headers, data=raw_body)
                if status != 400 or answer["error"]["code"] != "bad_request":
                    wrong.append((method, path, raw_body[:40], status, answer))
        assert wrong == []
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        [hook] = listed["webhooks"]
        assert hook["previous_secret_expires_at"] is None
        assert hook["updated_at"] == hook["created_at"]


async def test_oversized_bodies_are_413(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url="https://a.example.com/"))["webhook"]["id"]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        big = json.dumps({"url": "https://b.example.com/", "name": "x" * (300 * 1024)}).encode()
        assert len(big) > 256 * 1024
        for method, path in (
            ("POST", HOOKS),
            ("PATCH", hook_path(hook_id)),
            ("POST", hook_path(hook_id, "/secret")),
        ):
            status, _, answer = await raw(srv, method, path, headers=headers, data=big)
            assert status == 413, (method, path, answer)
            assert answer["error"]["code"] == "payload_too_large"
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        assert [h["url"] for h in listed["webhooks"]] == ["https://a.example.com/"]


# -- plan limits ---------------------------------------------------------------------------------
async def test_free_plan_allows_two_endpoints(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="free")
        first = await create_hook(srv, key, url="https://one.example.com/")
        await create_hook(srv, key, url="https://two.example.com/")
        status, answer = await call(srv, "POST", HOOKS, key, {"url": "https://three.example.com/"})
        assert status == 403
        assert answer["error"]["code"] == "forbidden"
        assert "free plan allows at most 2 webhook endpoints" in answer["error"]["message"]
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        assert len(listed["webhooks"]) == 2
        # Deleting one makes room again.
        await call(srv, "DELETE", hook_path(first["webhook"]["id"]), key, expect=204)
        await create_hook(srv, key, url="https://three.example.com/")


async def test_downgrade_below_the_endpoint_count_is_409(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        made = [await create_hook(srv, key, url=f"https://h{i}.example.com/") for i in range(3)]
        status, answer = await call(srv, "PATCH", "/api/v1/account", key, {"plan": "free"})
        assert status == 409, answer
        assert answer["error"]["code"] == "conflict"
        assert "2 webhook endpoints" in answer["error"]["message"]
        _, account = await call(srv, "GET", "/api/v1/account", key, expect=200)
        assert account["account"]["plan"] == "pro"
        await call(srv, "DELETE", hook_path(made[0]["webhook"]["id"]), key, expect=204)
        _, changed = await call(srv, "PATCH", "/api/v1/account", key, {"plan": "free"})
        assert changed["account"]["plan"] == "free"
        status, _ = await call(srv, "POST", HOOKS, key, {"url": "https://h9.example.com/"})
        assert status == 403


# -- secret rotation -----------------------------------------------------------------------------
def signatures(got_headers: dict[str, str]) -> list[str]:
    return got_headers["webhook-signature"].split(" ")


async def test_rotation_signs_with_both_secrets_during_grace(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url=rx.url("/r"))
        hook_id, old = created["webhook"]["id"], created["secret"]
        status, rotated = await call(
            srv, "POST", hook_path(hook_id, "/secret"), key, {"grace_seconds": 3600}
        )
        assert status == 201, rotated
        new = rotated["secret"]
        assert new.startswith("whsec_")
        assert new != old
        assert rotated["webhook"]["secret_prefix"] == new[:12]
        assert rotated["webhook"]["previous_secret_expires_at"] == clock.time() + 3600
        assert old not in json.dumps(rotated)
        assert (await get_hook(srv, key, hook_id))["previous_secret_expires_at"] == (
            clock.time() + 3600
        )

        await try_hook(srv, key, hook_id)
        during = rx.got[-1]
        assert len(signatures(during.headers)) == 2
        assert all(s.startswith("v1,") for s in signatures(during.headers))
        during.verify(old)
        during.verify(new)

        clock.advance(3601)
        await try_hook(srv, key, hook_id)
        after = rx.got[-1]
        assert len(signatures(after.headers)) == 1
        after.verify(new)
        with pytest.raises(WebhookVerificationError):
            after.verify(old)
        assert (await get_hook(srv, key, hook_id))["previous_secret_expires_at"] is None


async def test_patch_nulls_are_refused_except_routing_key_which_clears(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url=rx.url(), routing_key=ROUTING_KEY)
        hook_id = created["webhook"]["id"]
        for name in ("url", "name", "format", "enabled", "filters"):
            status, answer = await call(srv, "PATCH", hook_path(hook_id), key, {name: None})
            assert (status, field_of(answer)) == (422, name), answer
        assert (await get_hook(srv, key, hook_id))["routing_key_set"] is True
        _, changed = await call(
            srv, "PATCH", hook_path(hook_id), key, {"routing_key": None}, expect=200
        )
        assert changed["webhook"]["routing_key_set"] is False
        _, _ = await call(
            srv, "PATCH", hook_path(hook_id), key, {"format": "pagerduty"}, expect=422
        )  # no key any more
        status, answer = await call(
            srv,
            "PATCH",
            hook_path(hook_id),
            key,
            {"format": "pagerduty", "routing_key": ROUTING_KEY},
        )
        assert status == 200, answer
        status, answer = await call(srv, "PATCH", hook_path(hook_id), key, {"routing_key": None})
        assert (status, field_of(answer)) == (422, "routing_key")  # pagerduty needs one


async def test_rotation_without_a_body_uses_the_default_grace(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url=rx.url("/r"))
        hook_id, old = created["webhook"]["id"], created["secret"]
        status, _, rotated = await raw(
            srv, "POST", hook_path(hook_id, "/secret"), headers={"Authorization": f"Bearer {key}"}
        )
        assert status == 201, rotated
        assert rotated["webhook"]["previous_secret_expires_at"] == clock.time() + 86400
        await try_hook(srv, key, hook_id)
        rx.got[-1].verify(old)
        rx.got[-1].verify(rotated["secret"])
        clock.advance(86400 + 1)
        await try_hook(srv, key, hook_id)
        with pytest.raises(WebhookVerificationError):
            rx.got[-1].verify(old)
        rx.got[-1].verify(rotated["secret"])


async def test_rotation_with_zero_grace_drops_the_old_secret_at_once(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url=rx.url("/r"))
        hook_id, old = created["webhook"]["id"], created["secret"]
        _, rotated = await call(
            srv, "POST", hook_path(hook_id, "/secret"), key, {"grace_seconds": 0}, expect=201
        )
        assert rotated["webhook"]["previous_secret_expires_at"] is None
        await try_hook(srv, key, hook_id)
        got = rx.got[-1]
        assert len(signatures(got.headers)) == 1
        got.verify(rotated["secret"])
        with pytest.raises(WebhookVerificationError):
            got.verify(old)
        assert not await text_in_database(store, old)


async def test_a_second_rotation_keeps_only_the_latest_previous_secret(
    store: Store, clock: FakeClock
) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url=rx.url("/r"))
        hook_id, first = created["webhook"]["id"], created["secret"]
        path = hook_path(hook_id, "/secret")
        _, one = await call(srv, "POST", path, key, {"grace_seconds": 600}, expect=201)
        _, two = await call(srv, "POST", path, key, {"grace_seconds": 600}, expect=201)
        await try_hook(srv, key, hook_id)
        got = rx.got[-1]
        assert len(signatures(got.headers)) == 2
        got.verify(two["secret"])
        got.verify(one["secret"])
        with pytest.raises(WebhookVerificationError):
            got.verify(first)


async def test_rotation_grace_out_of_range_is_422(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url="https://a.example.com/")
        hook_id = created["webhook"]["id"]
        wrong = []
        for body, field in [
            ({"grace_seconds": -1}, "grace_seconds"),
            ({"grace_seconds": 8 * 86400}, "grace_seconds"),
            ({"grace_seconds": 7 * 86400 + 1}, "grace_seconds"),
            ({"grace_seconds": "60"}, "grace_seconds"),
            ({"grace_seconds": 1.5}, "grace_seconds"),
            ({"grace_seconds": None}, "grace_seconds"),
            ({"grace_seconds": True}, "grace_seconds"),
            ({"grace_seconds": 10**40}, "grace_seconds"),
            ({"grace": 60}, "grace"),
        ]:
            status, answer = await call(srv, "POST", hook_path(hook_id, "/secret"), key, body)
            if status != 422 or answer["error"].get("field") != field:
                wrong.append((body, status, answer))
        assert wrong == []
        hook = await get_hook(srv, key, hook_id)
        assert hook["secret_prefix"] == created["secret"][:12]
        assert hook["previous_secret_expires_at"] is None


async def test_rotation_grace_of_seven_days_is_accepted(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url="https://a.example.com/"))["webhook"]["id"]
        _, rotated = await call(
            srv, "POST", hook_path(hook_id, "/secret"), key, {"grace_seconds": 7 * 86400}
        )
        assert rotated["webhook"]["previous_secret_expires_at"] == clock.time() + 7 * 86400


# -- test sends ----------------------------------------------------------------------------------
async def test_test_send_to_a_receiver_that_answers_200(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url=rx.url("/ok"))
        hook_id = created["webhook"]["id"]
        rx.script.append(Reply(200, body=b"thanks!", delay=0.02))
        result = await try_hook(srv, key, hook_id)
        assert result["delivered"] is True
        assert result["outcome"] == "delivered"
        assert result["status"] == 200
        assert result["excerpt"] == "thanks!"
        assert result["error"] is None
        assert result["latency_ms"] >= 20
        assert result["webhook_id"].startswith("msg_")
        [got] = rx.got
        assert got.path == "/ok"
        assert got.webhook_id == result["webhook_id"]
        payload: Any = got.verify(created["secret"])
        assert payload["type"] == "alert.test"
        assert payload["data"]["node"]["name"] == "test-node"

        hook = await get_hook(srv, key, hook_id)
        health = hook["health"]
        assert health["status"] == "healthy"
        assert health["last_success_at"] == clock.time()
        assert health["consecutive_failures"] == 0
        [attempt] = health["last_attempts"]
        assert attempt["webhook_id"] == result["webhook_id"]
        assert (attempt["status"], attempt["outcome"], attempt["attempt"]) == (200, "delivered", 1)
        assert attempt["latency_ms"] == result["latency_ms"]


async def test_test_sends_get_new_message_ids(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url=rx.url("/ok")))["webhook"]["id"]
        ids = {(await try_hook(srv, key, hook_id))["webhook_id"] for _ in range(3)}
        assert len(ids) == 3
        assert {r.webhook_id for r in rx.got} == ids


async def test_test_send_excerpt_is_capped(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url=rx.url("/big")))["webhook"]["id"]
        rx.script.append(Reply(200, body=b"a" * 100 + b"z" * 200_000))
        result = await try_hook(srv, key, hook_id)
        assert result["delivered"] is True
        assert result["excerpt"].startswith("a" * 100)
        assert 100 < len(result["excerpt"]) <= 1024
        assert len(json.dumps(result)) < 4096


async def test_test_send_to_a_receiver_that_answers_500(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url=rx.url("/down")))["webhook"]["id"]
        rx.script.append(Reply(500, body=b"oops"))
        result = await try_hook(srv, key, hook_id)
        assert result["delivered"] is False
        assert result["status"] == 500
        assert result["outcome"] == "retry"
        assert result["excerpt"] == "oops"
        # One attempt only, however long we wait past the retry delay.
        await rx.wait_for(lambda got: len(got) >= 1, timeout=1)
        with pytest.raises(TimeoutError):
            await rx.wait_for(lambda got: len(got) >= 2, timeout=0.3)
        assert len(rx.got) == 1
        hook = await get_hook(srv, key, hook_id)
        assert hook["enabled"] is True
        assert hook["health"]["consecutive_failures"] == 1
        assert hook["health"]["failing_since"] == clock.time()
        assert hook["health"]["pending"] == 0
        assert hook["health"]["status"] == "healthy"  # not failing for long yet
        [attempt] = hook["health"]["last_attempts"]
        assert (attempt["status"], attempt["outcome"]) == (500, "retry")
        assert attempt["webhook_id"] == result["webhook_id"]
        clock.advance(600)
        assert (await get_hook(srv, key, hook_id))["health"]["status"] == "unhealthy"
        # A new URL starts its health afresh.
        body = {"url": rx.url("/fixed")}
        _, changed = await call(srv, "PATCH", hook_path(hook_id), key, body, expect=200)
        health = changed["webhook"]["health"]
        assert (health["status"], health["consecutive_failures"]) == ("healthy", 0)
        assert health["failing_since"] is None


async def test_test_send_to_an_unreachable_receiver(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        rx = Receiver()
        await rx.up()
        url = rx.url("/gone")
        await rx.down()  # connections refused
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url=url))["webhook"]["id"]
        result = await try_hook(srv, key, hook_id)
        assert result["delivered"] is False
        assert result["status"] is None
        assert result["error"] == "connect"
        assert result["outcome"] == "retry"
        assert "/gone" not in result["detail"]


async def test_test_send_answered_410_disables_the_endpoint(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        account, key = await make_account(store, plan="pro")
        _, token = await make_node(store, account)
        created = await create_hook(srv, key, url=rx.url("/gone"))
        hook_id = created["webhook"]["id"]
        async with sending(srv, token) as send:
            await send(event(1, fingerprint="00000000000000a1"))  # fills the endpoint cache
            assert len(rx.got) == 1
            rx.script.append(Reply(410))
            result = await try_hook(srv, key, hook_id)
            assert result["delivered"] is False
            assert result["status"] == 410
            assert result["outcome"] == "disable"
            hook = await get_hook(srv, key, hook_id)
            assert hook["health"]["last_attempts"][0]["outcome"] == "disable"
            assert hook["enabled"] is False
            assert hook["health"]["status"] == "disabled"
            assert hook["disabled_reason"]

            await send(event(2, fingerprint="00000000000000a2"))  # no longer goes there
            assert len(rx.got) == 2
            # Enabled again, it starts afresh and receives alerts.
            _, on = await call(srv, "PATCH", hook_path(hook_id), key, {"enabled": True})
            assert on["webhook"]["enabled"] is True
            assert on["webhook"]["health"]["status"] == "healthy"
            await send(event(3, fingerprint="00000000000000a3"))
        assert len(rx.got) == 3
        assert rx.got[-1].verify(created["secret"])["data"]["id"] == "evt-00000003"


async def test_test_sends_are_rate_limited_per_account(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        _, other = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url=rx.url("/a")))["webhook"]["id"]
        spare = (await create_hook(srv, key, url=rx.url("/b")))["webhook"]["id"]
        other_id = (await create_hook(srv, other, url=rx.url("/c")))["webhook"]["id"]
        statuses = [
            (await raw(srv, "POST", hook_path(hook_id, "/test"), headers=_auth(key)))[0]
            for _ in range(10)
        ]
        assert statuses == [200] * 10
        status, headers, answer = await raw(
            srv, "POST", hook_path(hook_id, "/test"), headers=_auth(key)
        )
        assert status == 429, answer
        assert answer["error"]["code"] == "rate_limited"
        assert headers["Retry-After"] == "6"
        # The limit is the account's, not the endpoint's; other accounts are not affected.
        assert (await call(srv, "POST", hook_path(spare, "/test"), key))[0] == 429
        await call(srv, "POST", hook_path(other_id, "/test"), other, expect=200)
        assert len(rx.got) == 11
        clock.advance(6)
        await call(srv, "POST", hook_path(hook_id, "/test"), key, expect=200)
        assert (await call(srv, "POST", hook_path(hook_id, "/test"), key))[0] == 429


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- enabling and disabling -----------------------------------------------------------------------
async def test_disable_and_enable_through_patch(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        hook_id = (await create_hook(srv, key, url=rx.url("/a")))["webhook"]["id"]
        rx.script.append(Reply(503))
        await try_hook(srv, key, hook_id)  # one failure on record
        path = hook_path(hook_id)
        clock.advance(10)
        _, off = await call(srv, "PATCH", path, key, {"enabled": False}, expect=200)
        assert off["webhook"]["enabled"] is False
        assert off["webhook"]["disabled_reason"] == "disabled by the developer"
        assert off["webhook"]["health"]["status"] == "disabled"
        assert off["webhook"]["updated_at"] == clock.time()
        assert (await get_hook(srv, key, hook_id))["health"]["status"] == "disabled"

        _, on = await call(srv, "PATCH", path, key, {"enabled": True}, expect=200)
        assert on["webhook"]["enabled"] is True
        assert on["webhook"]["disabled_reason"] is None
        health = on["webhook"]["health"]
        assert health["status"] == "healthy"
        assert (health["consecutive_failures"], health["failing_since"]) == (0, None)


async def test_created_disabled(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url="https://a.example.com/", enabled=False)
        assert created["webhook"]["enabled"] is False
        assert created["webhook"]["health"]["status"] == "disabled"


# -- delete ---------------------------------------------------------------------------------------
async def test_delete_removes_the_row(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv, Receiver() as rx:
        _, key = await make_account(store, plan="pro")
        created = await create_hook(srv, key, url=rx.url("/a"))
        kept = await create_hook(srv, key, url=rx.url("/b"))
        hook_id, secret = created["webhook"]["id"], created["secret"]
        await try_hook(srv, key, hook_id)
        assert await text_in_database(store, secret)

        status, answer = await call(srv, "DELETE", hook_path(hook_id), key)
        assert (status, answer) == (204, None)
        assert (await call(srv, "GET", hook_path(hook_id), key))[0] == 404
        assert (await call(srv, "DELETE", hook_path(hook_id), key))[0] == 404
        assert (await call(srv, "POST", hook_path(hook_id, "/test"), key))[0] == 404
        assert (await call(srv, "POST", hook_path(hook_id, "/secret"), key))[0] == 404
        rows = (await all_rows(store))["webhook_endpoints"]
        assert all(hook_id not in row for row in rows)
        assert len(rows) == 1
        assert not await text_in_database(store, secret)
        _, listed = await call(srv, "GET", HOOKS, key, expect=200)
        assert [h["id"] for h in listed["webhooks"]] == [kept["webhook"]["id"]]


# -- OpenAPI --------------------------------------------------------------------------------------
async def test_openapi_lists_the_webhook_routes(store: Store, clock: FakeClock) -> None:
    async with hook_server(store, clock) as srv:
        status, _, document = await raw(srv, "GET", "/api/v1/openapi.json")
        assert status == 200
        paths = document["paths"]
        expected = {
            "/api/v1/webhooks": {"get", "post"},
            "/api/v1/webhooks/{id}": {"get", "patch", "delete"},
            "/api/v1/webhooks/{id}/secret": {"post"},
            "/api/v1/webhooks/{id}/test": {"post"},
        }
        for path, methods in expected.items():
            assert path in paths, path
            assert methods <= set(paths[path]), (path, set(paths[path]))
        # Every route the app serves under /api/v1/webhooks is documented.
        assert srv.app is not None
        served = {r.canonical for r in srv.app.router.resources() if r.canonical.startswith(HOOKS)}
        assert served == set(expected)
