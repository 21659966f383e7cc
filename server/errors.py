"""The server's one exception tree, converted to JSON at the edge (middleware.py) and nowhere else.

ApiError                     {"error": {"code", "message"}} with .status
├── BadRequest          400  malformed JSON, bad query string
├── Unauthorized        401  missing or wrong credentials
├── Forbidden           403  authenticated but not allowed (plan limits, CSRF)
├── NotFound            404  no such object — also another account's object
├── MethodNotAllowed    405
├── Conflict            409  duplicate, state conflict, plan limit reached
├── PayloadTooLarge     413
├── Unprocessable       422  valid JSON, invalid field (the field is named)
├── TooManyRequests     429  rate limited (Retry-After given)
└── Unavailable         503  storage unreachable
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, dict[str, str]]:
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class Unprocessable(ApiError):
    status = 422
    code = "invalid"


class TooManyRequests(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ApiError):
    status = 503
    code = "unavailable"
