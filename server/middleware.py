"""Edge middleware: domain errors → JSON, security headers. The only place errors become HTTP."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from server.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
)

log = logging.getLogger("oneconnect.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def error_response(error: ApiError) -> web.Response:
    response = web.json_response(error.body(), status=error.status)
    if isinstance(error, TooManyRequests):
        response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
    if isinstance(error, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="oneconnect"'
    return response


def _from_http(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return NotFound("no such route")
    if exc.status == 405:
        return MethodNotAllowed("method not allowed on this route")
    if exc.status == 413:
        return PayloadTooLarge("request body is too large")
    if exc.status == 400:
        return BadRequest(exc.reason or "bad request")
    error = ApiError(exc.reason or "error")
    error.status = exc.status
    error.code = exc.reason.lower().replace(" ", "_") if exc.reason else "error"
    return error


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_from_http(exc))
    except Exception:
        # A bug, not bad input: logged with the route only (never bodies or headers).
        log.exception("unhandled error on %s %s", request.method, request.match_info.route.name)
        response = error_response(ApiError("internal error"))
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
