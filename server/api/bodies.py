"""Request bodies: JSON object in, pydantic model out, or the right error.

    body = await read_json(request, NodeCreate)

- 400 ``bad_request``: not JSON (not UTF-8 as RFC 8259 requires, syntax, NaN/Infinity, nesting
  too deep, numbers too long), not a JSON object, or a Content-Type other than
  ``application/json`` (or ``…+json``) — which also refuses what a cross-site HTML form can
  send. A missing Content-Type is accepted.
- 413: the app's ``client_max_size`` stops oversized bodies while they are read.
- 422 ``invalid`` with ``field``: the first invalid or unknown field, dotted for nested ones.

Messages never quote the input; field names from the input are cut to 64 characters.
Shared field types (printable, bounded strings) live here so every model bounds its strings.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final, TypeVar

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from server.errors import BadRequest, Unprocessable

M = TypeVar("M", bound=BaseModel)

_FIELD_CHARS: Final = 64


class Body(BaseModel):
    """Base of every request model: unknown fields refused, no type coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must contain printable characters only (no control characters)")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value) or not value.isprintable():
        raise ValueError("must be an e-mail address like name@example.com")
    return value


Label = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_printable)]
"""Node and key names: 1-64 printable characters, stored as given."""
Text = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_printable)]
Email = Annotated[str, StringConstraints(min_length=3, max_length=254), AfterValidator(_email)]
Password = Annotated[str, StringConstraints(min_length=12, max_length=1024)]


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or BadRequest."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=refuse_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError included
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def validate(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model``, or Unprocessable naming the first offending field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        field = ".".join(str(part) for part in error["loc"])[:_FIELD_CHARS] or None
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        raise Unprocessable(f"{field}: {message}" if field else message, field=field) from None


async def read_json(request: web.Request, model: type[M]) -> M:
    content_type = request.headers.get("Content-Type")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise BadRequest("send the body as JSON with Content-Type: application/json")
    raw = await request.read()  # raises 413 past client_max_size
    return validate(model, decode_json_object(raw))
