"""Passwords, tokens and CSRF: the server's only secret-handling code.

Passwords are hashed with scrypt (n=2**14, r=8, p=1, 16-byte salt, 32-byte key) into a
self-describing string ``scrypt$16384$8$1$<salt b64>$<hash b64>``, so parameters can be raised
later without breaking old hashes (:func:`needs_rehash`). Hashing costs ~16 MiB and tens of ms of
CPU: callers on the event loop use :func:`hash_password_async` / :func:`verify_password_async`,
which run it in a worker thread.

API keys (``oc_key_…``), node tokens (``oc_node_…``) and session ids are 256-bit random strings,
so a plain SHA-256 digest is enough to store them (no salt or stretching needed: they cannot be
guessed). Only the digest and a short display prefix ever reach the database.

CSRF tokens are derived from the session id (``sha256("oneconnect-csrf:" + session id)``): the
server recomputes them from the cookie, so nothing more is stored, and a database reader — who
only has session digests — cannot compute them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from functools import cache
from typing import Final

API_KEY_PREFIX: Final = "oc_key_"
NODE_TOKEN_PREFIX: Final = "oc_node_"  # noqa: S105 (a prefix, not a secret)
DISPLAY_CHARS: Final = 6
"""Random characters kept after the type prefix for display (``oc_key_AbC123…``)."""
MAX_SECRET_CHARS: Final = 128
"""Longer presented secrets are refused before hashing (ours are ~50 characters)."""
MAX_PASSWORD_CHARS: Final = 1024

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
_MAX_N: Final = 2**20  # refuse absurd parameters in a stored hash (memory bound)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=length,
        maxmem=256 * r * n + 1024 * 1024,
    )


def hash_password(password: str) -> str:
    """A new self-describing scrypt hash of ``password`` (blocking: tens of ms)."""
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError("password too long")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a hash from :func:`hash_password`.
    A malformed stored hash verifies nothing (False), never raises."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error):
        return False
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    if not (8 <= len(salt) <= 64 and 16 <= len(expected) <= 64):
        return False
    actual = _scrypt(password, salt, n, r, p, len(expected))
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    """True when ``stored`` was made with other parameters than today's."""
    return not stored.startswith(f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$")


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def burn_verify(password: str) -> bool:
    """Spend the same work as a real verification and fail: used when an e-mail is unknown,
    so that the response time does not tell which part of a login was wrong."""
    verify_password(password, _dummy_hash())
    return False


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str | None) -> bool:
    """``stored`` None (unknown account): burns a dummy verification and returns False."""
    if stored is None:
        return await asyncio.to_thread(burn_verify, password)
    return await asyncio.to_thread(verify_password, password, stored)


# -- high-entropy secrets -------------------------------------------------------------------
def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_node_token() -> str:
    return NODE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def new_id() -> str:
    """A random, unguessable object id (32 hex characters)."""
    return secrets.token_hex(16)


def secret_digest(secret: str) -> str:
    """What is stored for an API key, node token or session id: SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(secret: str) -> str:
    """A short, non-secret label for a key or token: its type prefix and a few characters."""
    for kind in (API_KEY_PREFIX, NODE_TOKEN_PREFIX):
        if secret.startswith(kind):
            return secret[: len(kind) + DISPLAY_CHARS]
    return secret[:DISPLAY_CHARS]


def plausible_secret(secret: str, prefix: str) -> bool:
    """Cheap shape check before any lookup: the right type prefix, a bounded length, URL-safe
    characters only."""
    if not secret.startswith(prefix) or not len(prefix) < len(secret) <= MAX_SECRET_CHARS:
        return False
    body = secret[len(prefix) :]
    return body.isascii() and all(c.isalnum() or c in "-_" for c in body)


def csrf_token_for(session_id: str) -> str:
    digest = hashlib.sha256(b"oneconnect-csrf:" + session_id.encode("utf-8", "surrogatepass"))
    return base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")


def csrf_matches(session_id: str, presented: str | None) -> bool:
    if not presented or len(presented) > MAX_SECRET_CHARS:
        return False
    expected = csrf_token_for(session_id)
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogatepass"))
