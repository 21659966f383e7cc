"""OpenAPI 3.1 fragments shared by the accounts and nodes routes: JSON shapes of the resources,
the error body, security requirements, and a helper that builds one operation.

The security requirement names used here are defined by :data:`SECURITY_SCHEMES`; the module
that assembles ``/api/v1/openapi.json`` puts that into ``components.securitySchemes``.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

SECURITY_SCHEMES: Final[dict[str, dict[str, str]]] = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key, oc_key_…"},
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": "oc_session",
        "description": "dashboard session; writes also need the X-CSRF-Token header",
    },
}
AUTHENTICATED: Final[list[dict[str, list[str]]]] = [{"apiKey": []}, {"session": []}]
PUBLIC: Final[list[dict[str, list[str]]]] = []

_NUMBER: Final = {"type": "number"}
_STRING: Final = {"type": "string"}

ERROR: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": _STRING, "message": _STRING, "field": _STRING},
        }
    },
}
LIMITS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "max_nodes": {"type": "integer"},
        "retention_days": {"type": "integer"},
        "max_webhooks": {"type": "integer"},
        "min_interval": _NUMBER,
        "saved_monitoring_included": {"type": "boolean"},
    },
}
ACCOUNT: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "id": _STRING,
        "name": _STRING,
        "email": _STRING,
        "company": {"type": ["string", "null"]},
        "plan": {"enum": ["free", "pro", "business"]},
        "limits": LIMITS,
        "saved_monitoring": {"type": "boolean"},
        "created_at": _NUMBER,
    },
}
API_KEY: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"id": _STRING, "name": _STRING, "prefix": _STRING, "created_at": _NUMBER},
}
NODE: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "id": _STRING,
        "name": _STRING,
        "token_prefix": _STRING,
        "created_at": _NUMBER,
        "enrolled": {"type": "boolean"},
        "enrolled_at": {"type": ["number", "null"]},
        "min_interval": _NUMBER,
    },
}
ID_PARAMETER: Final[dict[str, Any]] = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}

_ERROR_TEXT: Final = {
    400: "malformed JSON or not a JSON object",
    401: "missing or invalid credentials",
    403: "not allowed (plan limit, or missing CSRF token on a cookie-authenticated write)",
    404: "no such object (also another account's)",
    409: "conflict with the current state",
    413: "request body too large",
    422: "invalid field (named in error.field)",
    429: "rate limited (see Retry-After)",
}


def obj(**properties: Any) -> dict[str, Any]:
    """An object schema whose listed properties are all required."""
    return {"type": "object", "required": list(properties), "properties": properties}


def operation(
    summary: str,
    operation_id: str,
    *,
    ok: tuple[int, str, dict[str, Any] | None],
    errors: tuple[int, ...],
    body: type[BaseModel] | None = None,
    security: list[dict[str, list[str]]] = AUTHENTICATED,
    tag: str,
) -> dict[str, Any]:
    status, description, schema = ok
    success: dict[str, Any] = {"description": description}
    if schema is not None:
        success["content"] = {"application/json": {"schema": schema}}
    responses: dict[str, Any] = {str(status): success}
    for code in errors:
        responses[str(code)] = {
            "description": _ERROR_TEXT[code],
            "content": {"application/json": {"schema": ERROR}},
        }
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": operation_id,
        "tags": [tag],
        "security": security,
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body.model_json_schema()}},
        }
    return op
