"""Password hashing, tokens, digests and CSRF tokens."""

from __future__ import annotations

import asyncio
import base64
import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from server import security
from server.security import (
    csrf_matches,
    csrf_token_for,
    display_prefix,
    hash_password,
    needs_rehash,
    new_api_key,
    new_id,
    new_node_token,
    new_session_id,
    plausible_secret,
    secret_digest,
    verify_password,
    verify_password_async,
)

HASH_FORMAT = re.compile(r"scrypt\$16384\$8\$1\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def test_password_hash_format_and_verify() -> None:
    stored = hash_password("correct horse battery staple")
    match = HASH_FORMAT.fullmatch(stored)
    assert match, stored
    assert len(_unb64(match.group(1))) == 16
    assert len(_unb64(match.group(2))) == 32
    assert verify_password("correct horse battery staple", stored)
    assert not verify_password("correct horse battery stapl", stored)
    assert not verify_password("", stored)
    assert not needs_rehash(stored)


def test_same_password_gets_a_new_salt() -> None:
    assert hash_password("same password!") != hash_password("same password!")


def test_unicode_and_odd_passwords() -> None:
    for password in (
        "pässwörd-ünïcode",
        "密码密码密码密码密码密码",
        "\x00nul inside ok",
        "\ud800 lone",
    ):
        assert verify_password(password, hash_password(password))


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "scrypt",
        "bcrypt$12$xx",
        "scrypt$16384$8$1$!!!$AAAA",
        "scrypt$abc$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        "scrypt$3$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # n not a power of two
        "scrypt$1073741824$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",  # absurd memory
        "scrypt$16384$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA$extra",
    ],
)
def test_malformed_stored_hash_never_verifies(stored: str) -> None:
    assert not verify_password("whatever password", stored)


def test_needs_rehash_for_older_parameters() -> None:
    assert needs_rehash("scrypt$1024$8$1$c2FsdA$aGFzaA")
    assert needs_rehash("pbkdf2$whatever")


def test_overlong_password_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        hash_password("x" * (security.MAX_PASSWORD_CHARS + 1))
    assert not verify_password("x" * (security.MAX_PASSWORD_CHARS + 1), hash_password("short"))


async def test_unknown_account_burns_comparable_time() -> None:
    stored = hash_password("the real password")
    started = time.perf_counter()
    assert not await verify_password_async("wrong guess here", stored)
    real = time.perf_counter() - started
    started = time.perf_counter()
    assert not await verify_password_async("wrong guess here", None)  # dummy hash cached now
    assert not await verify_password_async("wrong guess here", None)
    dummy = (time.perf_counter() - started) / 2
    assert dummy > real / 4, (dummy, real)


async def test_hashing_runs_off_the_event_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(10_000):
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.gather(*(security.hash_password_async("p" * 20) for _ in range(4)))
    task.cancel()
    assert ticks >= 2


def test_tokens_shape_and_uniqueness() -> None:
    keys = {new_api_key() for _ in range(200)}
    tokens = {new_node_token() for _ in range(200)}
    assert len(keys) == len(tokens) == 200
    for key in keys:
        assert key.startswith("oc_key_")
        assert len(key) == 7 + 43
        assert plausible_secret(key, "oc_key_")
        assert not plausible_secret(key, "oc_node_")
    for token in tokens:
        assert token.startswith("oc_node_")
        assert len(token) == 8 + 43
    assert len(new_session_id()) == 43
    assert re.fullmatch(r"[0-9a-f]{32}", new_id())


def test_digest_and_display_prefix() -> None:
    key = new_api_key()
    assert re.fullmatch(r"[0-9a-f]{64}", secret_digest(key))
    assert secret_digest(key) == secret_digest(key) != secret_digest(new_api_key())
    assert display_prefix(key) == key[:13]
    token = new_node_token()
    assert display_prefix(token) == token[:14]
    assert display_prefix("abcdefghij") == "abcdef"


@pytest.mark.parametrize(
    "secret",
    ["", "oc_key_", "oc_key_" + "a" * 200, "oc_key_abc def", "oc_key_ümlaut", "oc_key_a/b"],
)
def test_implausible_secrets(secret: str) -> None:
    assert not plausible_secret(secret, "oc_key_")


def test_csrf_token_derived_from_session() -> None:
    sid = new_session_id()
    token = csrf_token_for(sid)
    assert token != sid
    assert token != secret_digest(sid)
    assert len(token) == 43
    assert csrf_matches(sid, token)
    assert not csrf_matches(sid, None)
    assert not csrf_matches(sid, "")
    assert not csrf_matches(sid, token[:-1])
    assert not csrf_matches(new_session_id(), token)
    assert not csrf_matches(sid, token + "x" * 200)


@given(st.text(max_size=300), st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_checks_never_raise_on_hostile_input(secret: str, presented: str) -> None:
    plausible_secret(secret, "oc_key_")
    plausible_secret(secret, "")
    csrf_matches(secret, presented)
    secret_digest(secret)
    display_prefix(secret)
