"""The developer's data rights over HTTP: saved-monitoring consent, deletion on request, export.

Consent is part of ``PATCH /api/v1/account`` (◆), whose handler stays in ``accounts.py`` and
calls :func:`change_account` here: ``{"saved_monitoring": true, "saved_nodes": [ids] | null}``
turns it on (null or absent = every node; 403 when the plan keeps nothing, 422 for ids that
are not the account's nodes) and records when and by which API key or session;
``{"saved_monitoring": false, "keep_saved_data": false}`` turns it off and deletes every saved
row at once (``keep_saved_data: true`` leaves them until their retention ends). A change to a
plan without saved monitoring while it is on is 409 (turn it off first). After every consent or
plan change each callback in ``app[CONSENT_LISTENERS]`` is awaited with the account id (the
server's in-memory consent cache).

``DELETE /api/v1/account`` (◆) deletes the account and everything of it except what an active
legal hold keeps, and answers 202 with the request's state and a status URL whose random token
is shown once (stored as a SHA-256 digest). ``GET /api/v1/deletions/{token}`` needs no other
credential. ``GET /api/v1/account/export`` streams everything stored about the account as one
JSON document (see :func:`export`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import Field, StringConstraints

from server import ingest
from server.api.auth import SESSION_COOKIE, Principal, client_key, require_account
from server.api.bodies import Body
from server.api.schemas import ACCOUNT, PUBLIC, obj, operation
from server.errors import Conflict, Forbidden, NotFound, Unprocessable
from server.keys import CLOCK, LIMITER, STORE, WEBHOOKS
from server.middleware import SECURITY_HEADERS
from server.plans import get_plan
from server.ratelimit import Rate
from server.security import plausible_secret
from server.storage.datamap import EXPORT, Section
from server.storage.deletion import Deletion
from server.storage.rights import Consent
from server.storage.schema import accounts
from server.storage.store import Account

log = logging.getLogger("oneconnect.server.rights")
routes = web.RouteTableDef()

Listener = Callable[[str], Awaitable[None]]
CONSENT_LISTENERS: web.AppKey[list[Listener]] = web.AppKey("consent_listeners")
"""Awaited with the account id after its consent or plan changed, or it was deleted."""

STATUS_TOKEN_PREFIX: Final = "oc_del_"  # noqa: S105 (a prefix, not a secret)
MAX_SAVED_NODES: Final = 1000
EXPORTS: Final = Rate(per_second=1 / 60, burst=5)
"""Exports per account: 5 at once, then one a minute (each reads every saved row)."""
STATUS_READS: Final = Rate(per_second=1.0, burst=30)
"""Deletion status reads per client."""
CHUNK_BYTES: Final = 64 * 1024
EXPORT_FORMAT: Final = 1

WHAT_IS_SAVED: Final = (
    "metric samples of the chosen nodes as they arrive (node-level figures only, nothing "
    "about VPN users)",
    "per-minute and per-hour minimum, maximum and average of each series, for long charts",
    "the alert history of the chosen nodes: each firing and resolved alert with its value "
    "and threshold",
    "webhook delivery attempts: time, HTTP status, latency and outcome (never a body)",
    "webhook deliveries still pending, so that they survive a server restart",
)

NodeId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class ConsentPatch(Body):
    """The consent fields of ``PATCH /api/v1/account`` (its body model extends this)."""

    saved_monitoring: bool | None = None
    saved_nodes: Annotated[list[NodeId], Field(min_length=1, max_length=MAX_SAVED_NODES)] | None = (
        None
    )
    keep_saved_data: bool | None = None


@dataclass(frozen=True, slots=True)
class ConsentChange:
    on: bool
    nodes: tuple[str, ...] | None
    keep_data: bool


def consent_change(body: ConsentPatch) -> ConsentChange | None:
    """What the body asks of the consent, or None; Unprocessable for contradictions."""
    given = body.model_fields_set
    for name in ("saved_monitoring", "keep_saved_data"):
        if name in given and getattr(body, name) is None:
            raise Unprocessable(f"{name}: may not be null", field=name)
    if "saved_monitoring" not in given:
        for name in ("saved_nodes", "keep_saved_data"):
            if name in given:
                raise Unprocessable(f"{name}: only together with saved_monitoring", field=name)
        return None
    if body.saved_monitoring is False and "saved_nodes" in given:
        raise Unprocessable("saved_nodes: only with saved_monitoring true", field="saved_nodes")
    nodes = None if body.saved_nodes is None else tuple(dict.fromkeys(body.saved_nodes))
    return ConsentChange(bool(body.saved_monitoring), nodes, bool(body.keep_saved_data))


def consented_by(principal: Principal) -> str:
    """``api_key:<key id>`` or ``session:<first 16 characters of the session digest>``."""
    if principal.via == "api_key":
        return f"api_key:{principal.credential_id}"
    return f"session:{principal.credential_id[:16]}"


def saved_json(consent: Consent | None, account: Account) -> dict[str, Any] | None:
    """The account's ``saved`` object, or None while saved monitoring is off."""
    if consent is None:
        return None
    return {
        "nodes": None if consent.nodes is None else list(consent.nodes),
        "consented_at": consent.consented_at,
        "consented_by": consent.consented_by,
        "retention_days": get_plan(account.plan).retention_days,
        "what": list(WHAT_IS_SAVED),
    }


async def notify(app: web.Application, account_id: str) -> None:
    """Tell every consent listener; one failing does not undo the (committed) change."""
    for listener in app.get(CONSENT_LISTENERS, []):
        try:
            await listener(account_id)
        except Exception:
            log.exception("a consent listener failed")


async def change_account(
    request: web.Request,
    principal: Principal,
    *,
    plan: str | None,
    change: ConsentChange | None,
    update: Callable[[], Awaitable[Account]],
) -> tuple[Account, Consent | None]:
    """``PATCH /api/v1/account``: check the consent change against the resulting plan, run
    ``update`` (name, company, plan), then change the consent. Returns the account and its
    consent afterwards."""
    store = request.app[STORE]
    account_id = principal.account_id
    target = get_plan(plan or principal.account.plan)
    if change is not None and change.on:
        if not target.includes_saved_monitoring:
            raise Forbidden(
                f"saved monitoring is not included in the {target.name} plan; "
                "change to a plan with retention (pro or business)"
            )
        if change.nodes is not None:
            owned = set(await store.account_node_ids(account_id))
            if unknown := sum(1 for n in change.nodes if n not in owned):
                raise Unprocessable(
                    f"saved_nodes: {unknown} of the ids are not nodes of this account",
                    field="saved_nodes",
                )
    elif (
        change is None
        and not target.includes_saved_monitoring
        and await store.consent(account_id) is not None
    ):
        raise Conflict(
            f"the {target.name} plan does not include saved monitoring: turn it off first "
            '("saved_monitoring": false, also possible in this request)'
        )
    account = await update()
    consent: Consent | None
    if change is None:
        consent = await store.consent(account_id)
    elif change.on:
        consent = await store.set_consent(
            account_id,
            nodes=change.nodes,
            by=consented_by(principal),
            now=request.app[CLOCK].time(),
            keep_data=change.keep_data,
        )
    else:
        await store.clear_consent(account_id, keep_data=change.keep_data)
        consent = None
    if plan is not None and account.plan != principal.account.plan:
        # Saved rows follow the new plan's retention at once (older ones go, the rest re-class).
        await store.reclass(
            account_id, get_plan(account.plan).retention_days, request.app[CLOCK].time()
        )
    if change is not None or plan is not None:
        await notify(request.app, account_id)
    return account, consent


# -- deletion ---------------------------------------------------------------------------------
def new_status_token() -> str:
    return STATUS_TOKEN_PREFIX + secrets.token_urlsafe(32)


def deletion_json(deletion: Deletion, token: str) -> dict[str, Any]:
    return {
        "id": deletion.id,
        "state": deletion.state,
        "requested_at": deletion.requested_at,
        "completed_at": deletion.completed_at,
        "holds": [
            {"kind": h.kind, "categories": list(h.categories), "ends_at": h.ends_at}
            for h in deletion.holds
        ],
        "status_url": f"/api/v1/deletions/{token}",
    }


@routes.delete("/api/v1/account")
async def delete_account(request: web.Request) -> web.Response:
    principal = await require_account(request)
    store, app = request.app[STORE], request.app
    account_id = principal.account_id
    node_ids = await store.account_node_ids(account_id)
    endpoints = await store.webhooks(account_id)
    token = new_status_token()
    deletion = await store.delete_account(account_id, status_token=token, now=app[CLOCK].time())
    for node_id in node_ids:
        await ingest.drop_node(app, node_id, forget=True)
    sink = app.get(WEBHOOKS)
    if sink is not None:
        sink.invalidate(account_id)
        for endpoint in endpoints:
            sink.engine.forget(endpoint.id)
        for node_id in node_ids:
            sink.forget_node(node_id)
    await notify(app, account_id)
    response = web.json_response({"deletion": deletion_json(deletion, token)}, status=202)
    if principal.via == "session":
        response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.get("/api/v1/deletions/{token}")
async def deletion_status(request: web.Request) -> web.Response:
    rate = STATUS_READS
    request.app[LIMITER].check(
        "deletion-status", client_key(request), rate=rate.per_second, burst=rate.burst
    )
    token = request.match_info["token"]
    deletion = None
    if plausible_secret(token, STATUS_TOKEN_PREFIX):
        deletion = await request.app[STORE].deletion(token, request.app[CLOCK].time())
    if deletion is None:
        raise NotFound("no such deletion request")
    return web.json_response({"deletion": deletion_json(deletion, token)})


# -- export -----------------------------------------------------------------------------------
def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@routes.get("/api/v1/account/export")
async def export(request: web.Request) -> web.StreamResponse:
    """Streams ``{"export": {format, generated_at, account_id, omitted}, "account": {...},
    "<table>": [rows...] for every other section, "counts": {"<table>": n}}``; the monitored
    tables are read in pages while being written. Should the database fail midway, the
    connection is closed before the document ends, so a truncated export never parses."""
    principal = await require_account(request)
    rate = EXPORTS
    request.app[LIMITER].check(
        "export", principal.account_id, rate=rate.per_second, burst=rate.burst
    )
    store = request.app[STORE]
    header = {
        "format": EXPORT_FORMAT,
        "generated_at": request.app[CLOCK].time(),
        "account_id": principal.account_id,
        "omitted": {s.name: dict(s.omitted) for s in EXPORT if s.omitted},
    }
    async with contextlib.aclosing(store.export(principal.account_id)) as pages:
        first = await anext(pages)  # a storage error here is still a JSON error response
        response = web.StreamResponse(
            headers={
                **SECURITY_HEADERS,
                "Content-Type": "application/json; charset=utf-8",
                "Content-Disposition": 'attachment; filename="oneconnect-export.json"',
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            await _write_export(response, header, first, pages)
        except Exception:
            log.exception("export failed midway; connection closed")
            if request.transport is not None:
                request.transport.close()
            return response
    await response.write_eof()
    return response


class _Chunks:
    """Text written to the response in chunks of about CHUNK_BYTES."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.parts: list[str] = []
        self.size = 0

    async def put(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size >= CHUNK_BYTES:
            await self.flush()

    async def flush(self) -> None:
        await self.response.write("".join(self.parts).encode())
        self.parts.clear()
        self.size = 0


async def _write_export(
    response: web.StreamResponse,
    header: dict[str, Any],
    first: tuple[Section, list[dict[str, Any]]],
    pages: AsyncIterator[tuple[Section, list[dict[str, Any]]]],
) -> None:
    out = _Chunks(response)
    await out.put(f'{{"export":{_dumps(header)}')
    counts: dict[str, int] = {}
    open_list: str | None = None

    async def write(section: Section, rows: list[dict[str, Any]]) -> None:
        nonlocal open_list
        if open_list is not None and open_list != section.name:
            await out.put("]")
            open_list = None
        if section.table is accounts:
            await out.put(f',"account":{_dumps(rows[0] if rows else None)}')
            counts[section.name] = len(rows)
            return
        if open_list is None:
            await out.put(f',"{section.name}":[')
            open_list = section.name
            counts[section.name] = 0
        for row in rows:
            await out.put(("," if counts[section.name] else "") + _dumps(row))
            counts[section.name] += 1

    await write(*first)
    async for section, rows in pages:
        await write(section, rows)
    if open_list is not None:
        await out.put("]")
    await out.put(f',"counts":{_dumps(counts)}}}')
    await out.flush()


# -- OpenAPI ----------------------------------------------------------------------------------
_TAG = "data rights"
_NUMBER_OR_NULL: Final = {"type": ["number", "null"]}
SAVED: Final[dict[str, Any]] = {
    "type": ["object", "null"],
    "description": "saved monitoring's consent; null while it is off",
    "properties": {
        "nodes": {"type": ["array", "null"], "items": {"type": "string"}},
        "consented_at": {"type": "number"},
        "consented_by": {"type": "string", "description": "api_key:<id> or session:<digest>"},
        "retention_days": {"type": "integer"},
        "what": {"type": "array", "items": {"type": "string"}},
    },
}
ACCOUNT_WITH_SAVED: Final[dict[str, Any]] = {
    **ACCOUNT,
    "properties": {**ACCOUNT["properties"], "saved": SAVED},
}
DELETION: Final[dict[str, Any]] = obj(
    id={"type": "string"},
    state={"enum": ["held", "completed"]},
    requested_at={"type": "number"},
    completed_at=_NUMBER_OR_NULL,
    holds={
        "type": "array",
        "items": obj(
            kind={"type": "string"},
            categories={"type": "array", "items": {"type": "string"}},
            ends_at=_NUMBER_OR_NULL,
        ),
    },
    status_url={"type": "string", "description": "shown once; needs no other credential"},
)
_TOKEN_PARAMETER: Final = {
    "name": "token",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}

OPENAPI: dict[str, dict[str, Any]] = {
    "/api/v1/account": {
        "delete": operation(
            "Delete the account and all its data (except what a legal hold keeps); "
            "returns the request's state and a status URL (shown once)",
            "deleteAccount",
            ok=(202, "deleted, or held in part", obj(deletion=DELETION)),
            errors=(401, 403, 429),
            tag=_TAG,
        ),
    },
    "/api/v1/deletions/{token}": {
        "parameters": [_TOKEN_PARAMETER],
        "get": operation(
            "A deletion request's state (the token from its status URL is the credential)",
            "getDeletion",
            ok=(200, "the request", obj(deletion=DELETION)),
            errors=(404, 429),
            security=PUBLIC,
            tag=_TAG,
        ),
    },
    "/api/v1/account/export": {
        "get": operation(
            "Everything stored about the account, as one JSON document (streamed)",
            "exportAccount",
            ok=(
                200,
                "export, account, one array per table (api_keys, sessions, nodes, "
                "webhook_endpoints, saved_monitoring, legal_holds, metric_points, "
                "metric_rollups, alert_history, delivery_attempts, delivery_queue), counts",
                {"type": "object"},
            ),
            errors=(401, 429),
            tag=_TAG,
        ),
    },
}
