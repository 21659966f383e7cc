"""Standard Webhooks signing, checked with the ``standardwebhooks`` library (what receivers
run), never with our own code: headers verify, rotation verifies with either secret, any
tampering fails. Plus secret format, message-id determinism and the speed budget."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from server.webhooks.signing import (
    SECRET_PREFIX,
    is_secret,
    message_id,
    new_secret,
    sign_headers,
    signature,
)

BODY = '{"type":"alert.firing","data":{"node":{"name":"vpn-fra-1 ✓"}}}'.encode()


def now() -> int:
    return int(time.time())


def b64_secret(size: int) -> str:
    return SECRET_PREFIX + base64.b64encode(bytes(range(size))).decode()


# ---------------------------------------------------------------------------- verification


def test_headers_verify_with_the_standardwebhooks_library() -> None:
    secret = new_secret()
    msg_id = message_id("ep_1", "evt-00000001")
    headers = sign_headers([secret], msg_id, now(), BODY)
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "alert.firing",
        "data": {"node": {"name": "vpn-fra-1 ✓"}},
    }


def test_headers_are_exactly_the_standard_ones() -> None:
    ts = now()
    msg_id = message_id("ep_1", "evt-00000001")
    headers = sign_headers([new_secret()], msg_id, ts, BODY)
    assert set(headers) == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
    }
    assert headers["webhook-id"] == msg_id
    assert headers["webhook-timestamp"] == str(ts)
    assert headers["content-type"] == "application/json"
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])


def test_signature_equals_the_library_signature() -> None:
    secret = new_secret()
    ts = now()
    msg_id = message_id("ep_1", "evt-00000001")
    expected = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), BODY.decode())
    assert signature(secret, msg_id, ts, BODY) == expected


def test_rotation_each_secret_alone_verifies() -> None:
    new, old = new_secret(), new_secret()
    ts = now()
    msg_id = message_id("ep_1", "evt-00000001")
    headers = sign_headers([new, old], msg_id, ts, BODY)
    signatures = headers["webhook-signature"].split(" ")
    assert signatures == [signature(new, msg_id, ts, BODY), signature(old, msg_id, ts, BODY)]
    Webhook(new).verify(BODY, headers)
    Webhook(old).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


@pytest.mark.parametrize("secret", [b64_secret(24), b64_secret(64), b64_secret(32).rstrip("=")])
def test_any_valid_secret_size_verifies(secret: str) -> None:
    headers = sign_headers([secret], message_id("ep", "evt-00000001"), now(), BODY)
    Webhook(secret).verify(BODY, headers)


@pytest.mark.parametrize("part", ["body", "id", "timestamp", "signature"])
def test_tampering_fails(part: str) -> None:
    secret = new_secret()
    ts = now()
    headers = sign_headers([secret], message_id("ep_1", "evt-00000001"), ts, BODY)
    body = BODY
    if part == "body":
        body = BODY.replace(b"vpn-fra-1", b"vpn-fra-2")
    elif part == "id":
        headers["webhook-id"] = message_id("ep_1", "evt-00000002")
    elif part == "timestamp":
        headers["webhook-timestamp"] = str(ts + 1)
    else:
        mac = base64.b64decode(headers["webhook-signature"][3:])
        flipped = bytes([mac[0] ^ 1]) + mac[1:]
        headers["webhook-signature"] = "v1," + base64.b64encode(flipped).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_wrong_secret_fails() -> None:
    headers = sign_headers([new_secret()], message_id("ep", "evt-00000001"), now(), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


# ---------------------------------------------------------------------------- secrets


def test_new_secret_format() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert len(key) == 32
    assert is_secret(secret)


def test_new_secrets_are_unique() -> None:
    made = {new_secret() for _ in range(500)}
    assert len(made) == 500
    assert len({s[6:12] for s in made}) > 400  # random from the first character on


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b64_secret(24), True),
        (b64_secret(32), True),
        (b64_secret(64), True),
        (b64_secret(32).rstrip("="), True),  # unpadded, as the libraries accept
        (b64_secret(23), False),
        (b64_secret(65), False),
        (b64_secret(16), False),
        ("whsec_", False),
        ("", False),
        (b64_secret(32).removeprefix("whsec_"), False),  # no prefix
        ("WHSEC_" + b64_secret(32)[6:], False),
        ("whsk_" + b64_secret(32)[6:], False),
        (SECRET_PREFIX + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(), False),
        (b64_secret(32)[:20] + " " + b64_secret(32)[20:], False),
        (b64_secret(32) + "\n", False),
        (b64_secret(32)[:-1] + "===", False),
        (SECRET_PREFIX + "!" * 44, False),
        (SECRET_PREFIX + "A" * 10_000, False),
        (SECRET_PREFIX + "A" * 41, False),  # 41 characters cannot be base64
    ],
)
def test_is_secret(value: str, ok: bool) -> None:
    assert is_secret(value) is ok


def test_signing_refuses_a_bad_secret() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        signature("whsec_short", "msg_1", now(), BODY)
    with pytest.raises(ValueError, match="whsec_"):
        sign_headers([new_secret(), "not-a-secret"], "msg_1", now(), BODY)


@pytest.mark.parametrize("msg_id", ["", "msg.1", "msg 1", "msg_1\r\nx: y", "é"])
def test_signing_refuses_a_bad_message_id(msg_id: str) -> None:
    with pytest.raises(ValueError, match="message id"):
        signature(new_secret(), msg_id, now(), BODY)


def test_signing_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        sign_headers([], "msg_1", now(), BODY)
    with pytest.raises(ValueError, match="timestamp"):
        sign_headers([new_secret()], "msg_1", -1, BODY)


# ---------------------------------------------------------------------------- message ids


def test_message_id_is_deterministic() -> None:
    first = message_id("ep_1", "evt-00000001")
    assert re.fullmatch(r"msg_[a-z2-7]{26}", first)
    assert message_id("ep_1", "evt-00000001") == first
    assert message_id("ep_1", "evt-00000001", 0) == first
    # Pinned: the same ids after a restart or an upgrade, or receivers see new messages.
    assert first == "msg_tmecyi5qeoi3yjnqvpjnqf2hp4"
    assert message_id("ep_1", "evt-00000001", 3) == "msg_5prwzfra4gssdurpjeugri6jgq"


def test_message_id_is_distinct_per_endpoint_event_and_repeat() -> None:
    ids = {
        message_id(endpoint, event, repeat)
        for endpoint in ("ep_1", "ep_2", "ep_3")
        for event in ("evt-00000001", "evt-00000002", "evt-00000003")
        for repeat in range(5)
    }
    assert len(ids) == 3 * 3 * 5
    # Field boundaries count: no two splits of the same characters collide.
    assert message_id("ep_1e", "vt-0000001") != message_id("ep_1", "evt-0000001")
    assert message_id("ep", "evt-00000001", 12) != message_id("ep", "evt-000000011", 2)


def test_message_id_refuses_a_negative_repeat() -> None:
    with pytest.raises(ValueError, match="repeat"):
        message_id("ep_1", "evt-00000001", -1)


def test_message_id_verifies_as_a_webhook_id() -> None:
    secret = new_secret()
    msg_id = message_id("ep:with/odd chars", "evt-00000001", 7)
    Webhook(secret).verify(BODY, sign_headers([secret], msg_id, now(), BODY))


# ---------------------------------------------------------------------------- speed


def test_signing_is_fast() -> None:
    """The budget is 2,000 signed deliveries a second; signing must take a small part of it."""
    current, old = new_secret(), new_secret()
    body = b"x" * 4096
    ts = now()
    ids = [message_id("ep_1", f"evt-{i:08d}") for i in range(2000)]
    started = time.perf_counter()
    for msg_id in ids:
        sign_headers([current, old], msg_id, ts, body)
    assert time.perf_counter() - started < 0.5
