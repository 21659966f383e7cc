"""Webhook endpoints (◆ ``/api/v1/webhooks``): create (secret shown once), list, read, change,
delete, rotate the signing secret, send a test.

Every route is scoped to the caller's account (another account's endpoint is 404). A URL is
checked when it is stored — http(s) only, no credentials, no blocked IP literal — and again,
with every resolved address, on each delivery (``server.webhooks.ssrf``). The signing secret
(``whsec_…``) is returned only by create and rotate; reads show its first characters. During
a rotation's grace window both secrets sign every delivery, so receivers can switch over.
Reads include the endpoint's delivery health and last attempts, held in memory.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Final, Literal

from aiohttp import web
from pydantic import Field, StringConstraints

from server.api.accounts import _limit, path_id
from server.api.auth import Principal, require_account
from server.api.bodies import Body, Label, read_json
from server.api.schemas import ID_PARAMETER, obj, operation
from server.errors import NotFound, Unprocessable
from server.keys import CLOCK, SETTINGS, STORE, WEBHOOKS
from server.ratelimit import Rate
from server.storage.store import Filters, WebhookEndpoint
from server.webhooks.formats import FORMATS, Notice, sample_event
from server.webhooks.signing import message_id, new_secret
from server.webhooks.ssrf import UnsafeTarget, check_url

routes = web.RouteTableDef()

TESTS: Final = Rate(per_second=1 / 6, burst=10)
"""Test sends per account: 10 at once, then one every 6 s."""
MAX_GRACE: Final = 7 * 86400
DEFAULT_GRACE: Final = 86400
SECRET_SHOWN: Final = 12
"""Characters of the secret a read shows (``whsec_`` and six more)."""

FormatName = Literal["generic", "slack", "discord", "teams", "pagerduty", "alertmanager"]
Url = Annotated[str, StringConstraints(min_length=8, max_length=2048)]
NodeId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
RuleName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:+/-]+$")
]
RoutingKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


class FiltersBody(Body):
    severities: list[Literal["info", "warning", "critical"]] = Field(
        default_factory=list, max_length=3
    )
    nodes: list[NodeId] = Field(default_factory=list, max_length=1000)
    rules: list[RuleName] = Field(default_factory=list, max_length=200)


class WebhookCreate(Body):
    url: Url
    name: Label | None = None
    format: FormatName = "generic"
    enabled: bool = True
    filters: FiltersBody = Field(default_factory=FiltersBody)
    routing_key: RoutingKey | None = None


class WebhookPatch(Body):
    """Only the fields given change; ``routing_key: null`` clears the key, other nulls are
    refused."""

    url: Url | None = None
    name: Label | None = None
    format: FormatName | None = None
    enabled: bool | None = None
    filters: FiltersBody | None = None
    routing_key: RoutingKey | None = None


class SecretRotation(Body):
    grace_seconds: int = Field(default=DEFAULT_GRACE, ge=0, le=MAX_GRACE)


def endpoint_json(request: web.Request, endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The public fields of an endpoint (never its secrets or routing key) and its health."""
    until = endpoint.previous_secret_until
    rotating = len(endpoint.signing_secrets(request.app[CLOCK].time())) > 1
    return {
        "id": endpoint.id,
        "name": endpoint.name,
        "url": endpoint.url,
        "format": endpoint.format,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "filters": endpoint.filters.as_json(),
        "routing_key_set": endpoint.routing_key is not None,
        "secret_prefix": endpoint.secret[:SECRET_SHOWN],
        "previous_secret_expires_at": until if rotating else None,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "health": request.app[WEBHOOKS].engine.health(endpoint),
    }


def _missing() -> NotFound:
    return NotFound("no such webhook endpoint")


def _checked_url(request: web.Request, url: str) -> str:
    if not url.isprintable() or any(c.isspace() for c in url):
        raise Unprocessable("url: must not contain spaces or control characters", field="url")
    try:
        check_url(url, request.app[SETTINGS].allow_networks())
    except UnsafeTarget as exc:
        raise Unprocessable(f"url: {exc}", field="url") from None
    return url


async def _checked_filters(
    principal: Principal, request: web.Request, body: FiltersBody
) -> Filters:
    if body.nodes:
        owned = set(await request.app[STORE].account_node_ids(principal.account_id))
        if any(node_id not in owned for node_id in body.nodes):
            raise Unprocessable("filters.nodes: not a node of this account", field="filters.nodes")
    return Filters(tuple(body.severities), tuple(dict.fromkeys(body.nodes)), tuple(body.rules))


def _needs_routing_key(fmt: str, routing_key: str | None) -> None:
    if fmt == "pagerduty" and routing_key is None:
        raise Unprocessable(
            "routing_key: the pagerduty format needs the integration's routing key",
            field="routing_key",
        )


async def _owned(request: web.Request, principal: Principal) -> WebhookEndpoint:
    endpoint = await request.app[STORE].webhook(principal.account_id, path_id(request))
    if endpoint is None:
        raise _missing()
    return endpoint


@routes.post("/api/v1/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    principal = await require_account(request)
    body = await read_json(request, WebhookCreate)
    url = _checked_url(request, body.url)
    _needs_routing_key(body.format, body.routing_key)
    filters = await _checked_filters(principal, request, body.filters)
    secret = new_secret()
    name = body.name or (check_url(url, request.app[SETTINGS].allow_networks()).host or "webhook")
    endpoint = await request.app[STORE].create_webhook(
        principal.account_id,
        name=name[:64],
        url=url,
        format=body.format,
        enabled=body.enabled,
        filters=filters,
        routing_key=body.routing_key,
        secret=secret,
        now=request.app[CLOCK].time(),
    )
    request.app[WEBHOOKS].invalidate(principal.account_id)
    return web.json_response(
        {"webhook": endpoint_json(request, endpoint), "secret": secret}, status=201
    )


@routes.get("/api/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    principal = await require_account(request)
    found = await request.app[STORE].webhooks(principal.account_id)
    return web.json_response({"webhooks": [endpoint_json(request, e) for e in found]})


@routes.get("/api/v1/webhooks/{id}")
async def get_webhook(request: web.Request) -> web.Response:
    principal = await require_account(request)
    return web.json_response({"webhook": endpoint_json(request, await _owned(request, principal))})


@routes.patch("/api/v1/webhooks/{id}")
async def change_webhook(request: web.Request) -> web.Response:
    principal = await require_account(request)
    endpoint_id = path_id(request)
    body = await read_json(request, WebhookPatch)
    current = await _owned(request, principal)
    for name in sorted(body.model_fields_set - {"routing_key"}):
        if getattr(body, name) is None:
            raise Unprocessable(f"{name}: must not be null", field=name)
    values: dict[str, Any] = {}
    if "routing_key" in body.model_fields_set and body.routing_key is None:
        values["routing_key"] = None  # null clears it
    if body.url is not None:
        values["url"] = _checked_url(request, body.url)
    if body.name is not None:
        values["name"] = body.name
    if body.format is not None:
        values["format"] = body.format
    if body.routing_key is not None:
        values["routing_key"] = body.routing_key
    _needs_routing_key(
        values.get("format", current.format), values.get("routing_key", current.routing_key)
    )
    if body.filters is not None:
        values["filters"] = await _checked_filters(principal, request, body.filters)
    if body.enabled is not None:
        values["enabled"] = body.enabled
        values["disabled_reason"] = None if body.enabled else "disabled by the developer"
    endpoint = await request.app[STORE].update_webhook(
        principal.account_id, endpoint_id, now=request.app[CLOCK].time(), **values
    )
    if endpoint is None:
        raise _missing()
    sink = request.app[WEBHOOKS]
    sink.invalidate(principal.account_id)
    sink.engine.update(endpoint)  # retries under way go to the endpoint as it is now
    if not endpoint.enabled:
        sink.engine.stop(endpoint.id, "endpoint disabled by the developer")
    elif "url" in values or (body.enabled and not current.enabled):
        sink.engine.restart(endpoint.id)
    return web.json_response({"webhook": endpoint_json(request, endpoint)})


@routes.delete("/api/v1/webhooks/{id}")
async def delete_webhook(request: web.Request) -> web.Response:
    principal = await require_account(request)
    endpoint_id = path_id(request)
    if not await request.app[STORE].delete_webhook(principal.account_id, endpoint_id):
        raise _missing()
    sink = request.app[WEBHOOKS]
    sink.invalidate(principal.account_id)
    sink.engine.forget(endpoint_id)
    return web.Response(status=204)


@routes.post("/api/v1/webhooks/{id}/secret")
async def rotate_secret(request: web.Request) -> web.Response:
    principal = await require_account(request)
    endpoint_id = path_id(request)
    body = await read_json(request, SecretRotation) if request.can_read_body else SecretRotation()
    now = request.app[CLOCK].time()
    secret = new_secret()
    endpoint = await request.app[STORE].rotate_webhook_secret(
        principal.account_id,
        endpoint_id,
        secret=secret,
        grace_until=now + body.grace_seconds,
        now=now,
    )
    if endpoint is None:
        raise _missing()
    request.app[WEBHOOKS].invalidate(principal.account_id)
    request.app[WEBHOOKS].engine.update(endpoint)  # retries are signed with the new secret
    return web.json_response(
        {"webhook": endpoint_json(request, endpoint), "secret": secret}, status=201
    )


@routes.post("/api/v1/webhooks/{id}/test")
async def send_test(request: web.Request) -> web.Response:
    principal = await require_account(request)
    endpoint = await _owned(request, principal)
    _limit(request, "webhook_test", principal.account_id, TESTS)
    now = request.app[CLOCK].time()
    notice = Notice(
        event=sample_event(now),
        node_id="0" * 32,
        node_name="test-node",
        sent_at=now,
        endpoint_id=endpoint.id,
        endpoint_name=endpoint.name,
        test=True,
        routing_key=endpoint.routing_key,
        public_url=request.app[SETTINGS].public_url,
    )
    msg_id = message_id(endpoint.id, f"test-{secrets.token_hex(8)}")
    attempt, decision = await request.app[WEBHOOKS].engine.send_once(endpoint, notice, msg_id)
    return web.json_response(
        {
            "delivered": decision.action == "delivered",
            "outcome": decision.action,
            "reason": decision.reason,
            "webhook_id": msg_id,
            "status": attempt.status,
            "latency_ms": round(attempt.latency * 1000, 1),
            "error": attempt.error,
            "detail": attempt.detail,
            "excerpt": attempt.excerpt,
        }
    )


_TAG = "webhooks"
_STRING: Final = {"type": "string"}
_STRINGS: Final = {"type": "array", "items": _STRING}
ATTEMPT: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "at": {"type": "number"},
        "webhook_id": _STRING,
        "attempt": {"type": "integer"},
        "status": {"type": ["integer", "null"]},
        "latency_ms": {"type": "number"},
        "outcome": {"enum": ["delivered", "retry", "final", "disable"]},
        "detail": _STRING,
    },
}
WEBHOOK: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "id": _STRING,
        "name": _STRING,
        "url": _STRING,
        "format": {"enum": list(FORMATS)},
        "enabled": {"type": "boolean"},
        "disabled_reason": {"type": ["string", "null"]},
        "filters": obj(severities=_STRINGS, nodes=_STRINGS, rules=_STRINGS),
        "routing_key_set": {"type": "boolean"},
        "secret_prefix": _STRING,
        "previous_secret_expires_at": {"type": ["number", "null"]},
        "created_at": {"type": "number"},
        "updated_at": {"type": "number"},
        "health": {
            "type": "object",
            "properties": {
                "status": {"enum": ["healthy", "unhealthy", "disabled"]},
                "failing_since": {"type": ["number", "null"]},
                "consecutive_failures": {"type": "integer"},
                "last_success_at": {"type": ["number", "null"]},
                "pending": {"type": "integer"},
                "last_attempts": {"type": "array", "items": ATTEMPT},
            },
        },
    },
}
_ONE = obj(webhook=WEBHOOK)
_WITH_SECRET = obj(webhook=WEBHOOK, secret={"type": "string", "description": "whsec_…, shown once"})
TEST_RESULT: Final = obj(
    delivered={"type": "boolean"},
    outcome={"enum": ["delivered", "retry", "final", "disable"]},
    reason=_STRING,
    webhook_id=_STRING,
    status={"type": ["integer", "null"]},
    latency_ms={"type": "number"},
    error={"type": ["string", "null"]},
    detail=_STRING,
    excerpt=_STRING,
)

OPENAPI: dict[str, dict[str, Any]] = {
    "/api/v1/webhooks": {
        "post": operation(
            "Create a webhook endpoint; returns its signing secret once",
            "createWebhook",
            ok=(201, "created", _WITH_SECRET),
            errors=(400, 401, 403, 413, 422, 429),
            body=WebhookCreate,
            tag=_TAG,
        ),
        "get": operation(
            "List the account's webhook endpoints with their delivery health",
            "listWebhooks",
            ok=(200, "the endpoints", obj(webhooks={"type": "array", "items": WEBHOOK})),
            errors=(401, 429),
            tag=_TAG,
        ),
    },
    "/api/v1/webhooks/{id}": {
        "parameters": [ID_PARAMETER],
        "get": operation(
            "One webhook endpoint",
            "getWebhook",
            ok=(200, "the endpoint", _ONE),
            errors=(401, 404, 429),
            tag=_TAG,
        ),
        "patch": operation(
            "Change an endpoint (URL, name, format, filters, enabled, routing key)",
            "changeWebhook",
            ok=(200, "the changed endpoint", _ONE),
            errors=(400, 401, 403, 404, 413, 422, 429),
            body=WebhookPatch,
            tag=_TAG,
        ),
        "delete": operation(
            "Delete an endpoint (pending deliveries to it end)",
            "deleteWebhook",
            ok=(204, "deleted", None),
            errors=(401, 403, 404, 429),
            tag=_TAG,
        ),
    },
    "/api/v1/webhooks/{id}/secret": {
        "parameters": [ID_PARAMETER],
        "post": operation(
            "Rotate the signing secret; the old one also signs for grace_seconds",
            "rotateWebhookSecret",
            ok=(201, "the new secret, shown once", _WITH_SECRET),
            errors=(400, 401, 403, 404, 413, 422, 429),
            body=SecretRotation,
            tag=_TAG,
        ),
    },
    "/api/v1/webhooks/{id}/test": {
        "parameters": [ID_PARAMETER],
        "post": operation(
            "Send a signed test event now (one attempt) and return the outcome",
            "testWebhook",
            ok=(200, "the outcome", TEST_RESULT),
            errors=(401, 403, 404, 429),
            tag=_TAG,
        ),
    },
}
