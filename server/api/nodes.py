"""Nodes: create (token shown once), list, read, rename, rotate the token, delete.

Every route is scoped to the caller's account: another account's node answers 404, exactly like
a node that does not exist. Rotating a token or deleting a node also closes the node's open
agent stream (``ingest.drop_node``): the old token stops working at once, not at reconnect.
``GET /api/v1/nodes/{id}/live`` lives with the live state (``server.api.live``), not here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server import ingest
from server.api.accounts import path_id
from server.api.auth import require_account
from server.api.bodies import Body, Label, read_json
from server.api.schemas import ID_PARAMETER, NODE, obj, operation
from server.errors import NotFound
from server.keys import CLOCK, STORE
from server.plans import get_plan
from server.security import new_node_token
from server.storage.store import Account, Node

routes = web.RouteTableDef()


class NodeCreate(Body):
    name: Label


class NodePatch(Body):
    name: Label


def node_json(node: Node, account: Account) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "token_prefix": node.token_prefix,
        "created_at": node.created_at,
        "enrolled": node.enrolled_at is not None,
        "enrolled_at": node.enrolled_at,
        "min_interval": get_plan(account.plan).min_interval,
    }


def _missing() -> NotFound:
    return NotFound("no such node")


@routes.post("/api/v1/nodes")
async def create_node(request: web.Request) -> web.Response:
    principal = await require_account(request)
    body = await read_json(request, NodeCreate)
    token = new_node_token()
    node = await request.app[STORE].create_node(
        principal.account_id, name=body.name, token=token, now=request.app[CLOCK].time()
    )
    return web.json_response(
        {"node": node_json(node, principal.account), "token": token}, status=201
    )


@routes.get("/api/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    principal = await require_account(request)
    found = await request.app[STORE].nodes(principal.account_id)
    return web.json_response({"nodes": [node_json(node, principal.account) for node in found]})


@routes.get("/api/v1/nodes/{id}")
async def get_node(request: web.Request) -> web.Response:
    principal = await require_account(request)
    node = await request.app[STORE].node(principal.account_id, path_id(request))
    if node is None:
        raise _missing()
    return web.json_response({"node": node_json(node, principal.account)})


@routes.patch("/api/v1/nodes/{id}")
async def rename_node(request: web.Request) -> web.Response:
    principal = await require_account(request)
    node_id = path_id(request)
    body = await read_json(request, NodePatch)
    node = await request.app[STORE].rename_node(principal.account_id, node_id, body.name)
    if node is None:
        raise _missing()
    return web.json_response({"node": node_json(node, principal.account)})


@routes.delete("/api/v1/nodes/{id}")
async def delete_node(request: web.Request) -> web.Response:
    principal = await require_account(request)
    node_id = path_id(request)
    if not await request.app[STORE].delete_node(principal.account_id, node_id):
        raise _missing()
    await ingest.drop_node(request.app, node_id, forget=True)
    return web.Response(status=204)


@routes.post("/api/v1/nodes/{id}/token")
async def rotate_token(request: web.Request) -> web.Response:
    principal = await require_account(request)
    node_id = path_id(request)
    token = new_node_token()
    node = await request.app[STORE].rotate_node_token(principal.account_id, node_id, token)
    if node is None:
        raise _missing()
    await ingest.drop_node(request.app, node_id, forget=False)
    return web.json_response(
        {"node": node_json(node, principal.account), "token": token}, status=201
    )


_TAG = "nodes"
_NODE_BODY = obj(node=NODE)
_WITH_TOKEN = obj(node=NODE, token={"type": "string", "description": "oc_node_…, shown once"})

OPENAPI: dict[str, dict[str, Any]] = {
    "/api/v1/nodes": {
        "post": operation(
            "Create a node; returns its token once (stored hashed)",
            "createNode",
            ok=(201, "created", _WITH_TOKEN),
            errors=(400, 401, 403, 413, 422, 429),
            body=NodeCreate,
            tag=_TAG,
        ),
        "get": operation(
            "List the account's nodes",
            "listNodes",
            ok=(200, "the nodes", obj(nodes={"type": "array", "items": NODE})),
            errors=(401, 429),
            tag=_TAG,
        ),
    },
    "/api/v1/nodes/{id}": {
        "parameters": [ID_PARAMETER],
        "get": operation(
            "One node",
            "getNode",
            ok=(200, "the node", _NODE_BODY),
            errors=(401, 404, 429),
            tag=_TAG,
        ),
        "patch": operation(
            "Rename a node",
            "renameNode",
            ok=(200, "the renamed node", _NODE_BODY),
            errors=(400, 401, 403, 404, 413, 422, 429),
            body=NodePatch,
            tag=_TAG,
        ),
        "delete": operation(
            "Delete a node (its token stops working)",
            "deleteNode",
            ok=(204, "deleted", None),
            errors=(401, 403, 404, 429),
            tag=_TAG,
        ),
    },
    "/api/v1/nodes/{id}/token": {
        "parameters": [ID_PARAMETER],
        "post": operation(
            "Revoke the node's token and issue a new one (shown once)",
            "rotateNodeToken",
            ok=(201, "the new token", _WITH_TOKEN),
            errors=(401, 403, 404, 429),
            tag=_TAG,
        ),
    },
}
