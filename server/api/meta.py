"""Operational routes: /healthz, /readyz, the server's own /metrics, and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server import __version__
from server.api.schemas import SECURITY_SCHEMES
from server.errors import Unavailable
from server.keys import STATS, STORE

routes = web.RouteTableDef()


@routes.get("/healthz", name="healthz")
async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Says nothing about storage (see /readyz)."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready: storage is reachable. 503 otherwise, so a load balancer stops sending traffic."""
    try:
        await request.app[STORE].ping()
    except Unavailable:
        raise
    except Exception as exc:
        raise Unavailable("storage is not reachable") from exc
    return web.json_response({"status": "ready"})


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    """The server's own counters (Prometheus text): never a node's values, never a person."""
    return web.Response(
        text=request.app[STATS].render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


@routes.get("/api/v1/openapi.json", name="openapi")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


def document() -> dict[str, Any]:
    from server.app import openapi_paths  # the app imports this module

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OneConnect Alert API",
            "version": __version__,
            "description": "Privacy-first monitoring and alerting for VPN server fleets. "
            'Errors are JSON: {"error": {"code", "message"}} with the right status.',
        },
        "servers": [{"url": "/"}],
        "paths": openapi_paths(),
        "components": {
            "securitySchemes": {
                **SECURITY_SCHEMES,
                "nodeToken": {"type": "http", "scheme": "bearer", "description": "oc_node_…"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
    }


def _plain(summary: str, content: str = "application/json") -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [],
        "responses": {"200": {"description": "OK", "content": {content: {}}}},
    }


OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/healthz": {"get": _plain("Liveness")},
    "/readyz": {
        "get": {
            **_plain("Readiness: storage reachable"),
            "responses": {
                "200": {"description": "ready"},
                "503": {"description": "storage unreachable"},
            },
        }
    },
    "/metrics": {"get": _plain("The server's own counters (Prometheus text)", "text/plain")},
    "/api/v1/openapi.json": {"get": _plain("This document")},
}
