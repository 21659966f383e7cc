"""Standard Webhooks signing (https://www.standardwebhooks.com): secrets, message ids, headers.

A receiver verifies a delivery with any Standard Webhooks library and the endpoint's secret:
``webhook-signature`` holds ``v1,<base64 HMAC-SHA256>`` of ``f"{id}.{timestamp}." + body``.

Choices:

- **Secrets** are ``whsec_`` + standard (padded) base64 of 32 random bytes, the form the spec
  and its libraries use. :func:`is_secret` accepts 24..64 decoded bytes, padded or not, and
  refuses the URL-safe alphabet: the reference libraries decode without validation and would
  silently drop ``-``/``_``, signing with a different key than the one the user holds.
- **Rotation**: :func:`sign_headers` takes several secrets and sends one signature per secret,
  space-separated, current first. A receiver that still holds the old secret keeps verifying.
- **Message ids** are derived, not random: a hash of endpoint, event id and repeat number.
  Every retry of one delivery carries the same ``webhook-id`` (receivers deduplicate on it),
  and so does a delivery started again after a server restart, because the agent resends the
  same event id. Different endpoints, events and reminders get different ids.
- **Speed**: the decoded key is cached (:func:`_key`), so signing is one HMAC over the body;
  tens of thousands of signatures a second in one process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
from collections.abc import Sequence
from functools import lru_cache
from typing import Final

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES: Final = 32
"""Random bytes in a new secret."""
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64
MESSAGE_ID_PREFIX: Final = "msg_"
SIGNATURE_VERSION: Final = "v1"

_MAX_SECRET_CHARS: Final = len(SECRET_PREFIX) + (MAX_SECRET_BYTES + 2) // 3 * 4
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_MSG_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a ``webhook-id`` may hold: header-safe, and no ``.`` (the signed content's separator)."""
_ID_DOMAIN: Final = b"oneconnect-alert/webhook-id/v1"


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode("ascii")


def _decode(value: str) -> bytes | None:
    if (
        not value.startswith(SECRET_PREFIX)
        or len(value) > _MAX_SECRET_CHARS
        or not _BASE64.fullmatch(value, len(SECRET_PREFIX))
    ):
        return None
    encoded = value[len(SECRET_PREFIX) :].rstrip("=")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        return None
    return key if MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES else None


def is_secret(value: str) -> bool:
    """True for a well-formed ``whsec_`` secret of 24..64 bytes (standard base64)."""
    return _decode(value) is not None


@lru_cache(maxsize=4096)
def _key(secret: str) -> bytes:
    """The HMAC key of a secret, decoded once per secret (ValueError is not cached)."""
    key = _decode(secret)
    if key is None:
        raise ValueError("not a whsec_ webhook secret")
    return key


def message_id(endpoint_id: str, event_id: str, repeat: int = 0) -> str:
    """``msg_`` + 26 base32 characters (130 bits) of a hash over endpoint, event and repeat.

    Deterministic, so retries and restarts keep the id; length-prefixed fields, so no two
    different inputs hash the same text.
    """
    if repeat < 0:
        raise ValueError("repeat must be >= 0")
    digest = hashlib.sha256(
        b"%s\0%d:%s\0%d:%s\0%d"
        % (
            _ID_DOMAIN,
            len(endpoint_id),
            endpoint_id.encode(),
            len(event_id),
            event_id.encode(),
            repeat,
        )
    ).digest()
    return MESSAGE_ID_PREFIX + base64.b32encode(digest).decode("ascii")[:26].lower()


def _check(msg_id: str, timestamp: int) -> None:
    if not _MSG_ID.fullmatch(msg_id):
        raise ValueError("message id must be 1..128 of [A-Za-z0-9_-]")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("timestamp must be whole seconds since the epoch")


def _sign(key: bytes, prefix: bytes, body: bytes) -> str:
    mac = hmac.digest(key, prefix + body, "sha256")
    return SIGNATURE_VERSION + "," + base64.b64encode(mac).decode("ascii")


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``f"{msg_id}.{timestamp}." + body`` under ``secret``."""
    _check(msg_id, timestamp)
    return _sign(_key(secret), f"{msg_id}.{timestamp}.".encode(), body)


def sign_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers of one delivery; one signature per secret, in order."""
    if not secrets:
        raise ValueError("at least one secret is needed")
    _check(msg_id, timestamp)
    prefix = f"{msg_id}.{timestamp}.".encode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(_sign(_key(s), prefix, body) for s in secrets),
        "content-type": "application/json",
    }
