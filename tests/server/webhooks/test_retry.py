"""The one retry decision, as tables: every status class and its boundaries, every error
kind, the last attempt, Retry-After in both forms (and garbage, huge, negative), backoff
with and without jitter. ``rand`` is fixed at 0.5 (no jitter) unless jitter is the point."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from server.webhooks.client import ERROR_KINDS, Attempt
from server.webhooks.retry import (
    DEFAULT_POLICY,
    Decision,
    RetryPolicy,
    backoff,
    decide,
    parse_retry_after,
)

NOW = 1_800_000_000.0


def no_jitter() -> float:
    return 0.5


def http_date(offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset, UTC), usegmt=True)


def response(status: int, retry_after: str | None = None) -> Attempt:
    return Attempt(status, 0.01, None, f"HTTP {status}", "", retry_after)


def failure(kind: str, detail: str = "") -> Attempt:
    return Attempt(None, 0.01, kind, detail or f"{kind} detail", "", None)


def judge(attempt: Attempt, number: int = 1, policy: RetryPolicy = DEFAULT_POLICY) -> Decision:
    return decide(attempt, number, now=NOW, policy=policy, rand=no_jitter)


# -------------------------------------------------------------------------- the table

TABLE: list[tuple[Attempt, int, Decision]] = [
    # 1xx and other non-responses
    (response(100), 1, Decision("final", None, "unexpected HTTP status 100")),
    (response(199), 1, Decision("final", None, "unexpected HTTP status 199")),
    # 2xx
    (response(200), 1, Decision("delivered", None, "HTTP 200")),
    (response(201), 1, Decision("delivered", None, "HTTP 201")),
    (response(204), 1, Decision("delivered", None, "HTTP 204")),
    (response(299), 1, Decision("delivered", None, "HTTP 299")),
    (response(200), 8, Decision("delivered", None, "HTTP 200")),  # on the last attempt too
    # 3xx: never followed, never retried — even with a Retry-After
    (response(300), 1, Decision("final", None, "HTTP 300: redirects are not followed")),
    (response(301), 1, Decision("final", None, "HTTP 301: redirects are not followed")),
    (response(302, "5"), 1, Decision("final", None, "HTTP 302: redirects are not followed")),
    (response(307), 1, Decision("final", None, "HTTP 307: redirects are not followed")),
    (response(399), 1, Decision("final", None, "HTTP 399: redirects are not followed")),
    # 4xx
    (response(400), 1, Decision("final", None, "HTTP 400")),
    (response(401), 1, Decision("final", None, "HTTP 401")),
    (response(403), 1, Decision("final", None, "HTTP 403")),
    (response(404), 1, Decision("final", None, "HTTP 404")),
    (response(405), 1, Decision("final", None, "HTTP 405")),
    (response(407), 1, Decision("final", None, "HTTP 407")),
    (response(408), 1, Decision("retry", 1.0, "HTTP 408")),
    (response(409), 1, Decision("final", None, "HTTP 409")),
    (response(410), 1, Decision("disable", None, "endpoint gone (410)")),
    (response(410), 8, Decision("disable", None, "endpoint gone (410)")),
    (response(411), 1, Decision("final", None, "HTTP 411")),
    (response(413), 1, Decision("final", None, "HTTP 413")),
    (response(422), 1, Decision("final", None, "HTTP 422")),
    (response(424), 1, Decision("final", None, "HTTP 424")),
    (response(425), 1, Decision("retry", 1.0, "HTTP 425")),
    (response(426), 1, Decision("final", None, "HTTP 426")),
    (response(429), 1, Decision("retry", 1.0, "HTTP 429")),
    (response(431), 1, Decision("final", None, "HTTP 431")),
    (response(499), 1, Decision("final", None, "HTTP 499")),
    # 5xx
    (response(500), 1, Decision("retry", 1.0, "HTTP 500")),
    (response(501), 1, Decision("retry", 1.0, "HTTP 501")),
    (response(502), 2, Decision("retry", 2.0, "HTTP 502")),
    (response(503), 3, Decision("retry", 4.0, "HTTP 503")),
    (response(504), 4, Decision("retry", 8.0, "HTTP 504")),
    (response(599), 7, Decision("retry", 64.0, "HTTP 599")),
    # beyond
    (response(600), 1, Decision("final", None, "unexpected HTTP status 600")),
    (response(999), 1, Decision("final", None, "unexpected HTTP status 999")),
    # the last attempt
    (response(500), 8, Decision("final", None, "gave up after 8 attempts: HTTP 500")),
    (response(429, "10"), 8, Decision("final", None, "gave up after 8 attempts: HTTP 429")),
    (response(408), 9, Decision("final", None, "gave up after 9 attempts: HTTP 408")),
    # Retry-After: seconds, HTTP-date, garbage, huge (capped), negative, past, zero
    (response(429, "30"), 1, Decision("retry", 30.0, "HTTP 429, Retry-After 30 s")),
    (response(503, "120"), 1, Decision("retry", 120.0, "HTTP 503, Retry-After 120 s")),
    (response(503, " 7 "), 1, Decision("retry", 7.0, "HTTP 503, Retry-After 7 s")),
    (response(503, "2.5"), 1, Decision("retry", 2.5, "HTTP 503, Retry-After 2.5 s")),
    (response(429, http_date(90)), 1, Decision("retry", 90.0, "HTTP 429, Retry-After 90 s")),
    (response(503, "soon"), 1, Decision("retry", 1.0, "HTTP 503")),
    (response(503, ""), 2, Decision("retry", 2.0, "HTTP 503")),
    (response(503, "99999999"), 1, Decision("retry", 300.0, "HTTP 503, Retry-After 1e+08 s")),
    (response(503, "-5"), 1, Decision("retry", 1.0, "HTTP 503")),
    (response(503, http_date(-3600)), 1, Decision("retry", 1.0, "HTTP 503")),
    (response(503, "0"), 3, Decision("retry", 4.0, "HTTP 503")),
    (response(503, "3"), 3, Decision("retry", 4.0, "HTTP 503")),  # backoff is longer: wins
    (response(500, "60"), 1, Decision("retry", 60.0, "HTTP 500, Retry-After 60 s")),
    # errors
    (failure("blocked", "webhook host x resolves to 10.0.0.5, a private address"), 1,
     Decision("final", None, "webhook host x resolves to 10.0.0.5, a private address")),
    (failure("invalid_url", "webhook URL has no host"), 1,
     Decision("final", None, "webhook URL has no host")),
    (failure("timeout", "connect timeout after 5.0 s"), 1,
     Decision("retry", 1.0, "connect timeout after 5.0 s")),
    (failure("connect", "cannot connect to h:443: Connection refused"), 2,
     Decision("retry", 2.0, "cannot connect to h:443: Connection refused")),
    (failure("tls", "TLS handshake with h:443 failed"), 1,
     Decision("retry", 1.0, "TLS handshake with h:443 failed")),
    (failure("protocol", "h:443 closed the connection without a response"), 1,
     Decision("retry", 1.0, "h:443 closed the connection without a response")),
    (failure("timeout", "no response within 10.0 s from h:443"), 8,
     Decision("final", None, "gave up after 8 attempts: no response within 10.0 s from h:443")),
    (failure("blocked", "b"), 8, Decision("final", None, "b")),
    (failure("mystery", "?"), 1, Decision("final", None, "?")),  # unknown kinds do not loop
]  # fmt: skip


@pytest.mark.parametrize(("attempt", "number", "expected"), TABLE)
def test_decide(attempt: Attempt, number: int, expected: Decision) -> None:
    assert judge(attempt, number) == expected


def test_every_status_has_one_action() -> None:
    """The whole status range against the rules as sets (the table above holds the texts)."""
    for status in range(100, 1000):
        action = judge(response(status)).action
        if 200 <= status < 300:
            assert action == "delivered", status
        elif status == 410:
            assert action == "disable", status
        elif status in (408, 425, 429) or 500 <= status < 600:
            assert action == "retry", status
        else:
            assert action == "final", status


@pytest.mark.parametrize("kind", ERROR_KINDS)
def test_every_error_kind_is_decided(kind: str) -> None:
    first = judge(failure(kind), 1).action
    last = judge(failure(kind), DEFAULT_POLICY.max_attempts).action
    if kind in ("blocked", "invalid_url"):
        assert (first, last) == ("final", "final")
    else:
        assert (first, last) == ("retry", "final")


def test_one_attempt_policy_gives_up_at_once() -> None:
    once = RetryPolicy(max_attempts=1)
    assert judge(response(503), 1, once) == Decision(
        "final", None, "gave up after 1 attempt: HTTP 503"
    )


def test_retry_after_is_capped_by_the_policy() -> None:
    policy = RetryPolicy(max_delay=60.0)
    assert judge(response(429, "3600"), 1, policy).delay == 60.0
    assert judge(response(429, http_date(86400)), 1, policy).delay == 60.0


def test_decide_uses_jitter_and_rejects_attempt_zero() -> None:
    assert decide(response(500), 1, now=NOW, rand=lambda: 0.0).delay == pytest.approx(0.8)
    assert decide(response(500), 1, now=NOW, rand=lambda: 0.999).delay == pytest.approx(1.1996)
    with pytest.raises(ValueError, match="start at 1"):
        decide(response(500), 0, now=NOW)


# ------------------------------------------------------------------------------ backoff


@pytest.mark.parametrize(
    ("number", "delay"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (8, 128.0), (9, 256.0), (10, 300.0),
     (50, 300.0), (100_000, 300.0)],
)  # fmt: skip
def test_backoff_doubles_and_is_capped(number: int, delay: float) -> None:
    assert backoff(number, rand=no_jitter) == delay


@pytest.mark.parametrize("rand", [0.0, 0.25, 0.5, 0.75, 0.999999])
def test_backoff_jitter_stays_within_bounds(rand: float) -> None:
    for number in range(1, 12):
        plain = min(300.0, 2.0 ** (number - 1))
        delay = backoff(number, rand=lambda: rand)
        assert plain * 0.8 - 1e-9 <= delay <= min(300.0, plain * 1.2) + 1e-9


def test_backoff_with_a_custom_policy() -> None:
    policy = RetryPolicy(base=0.5, factor=3.0, max_delay=10.0, jitter=0.0)
    assert [backoff(n, policy, rand=lambda: 0.0) for n in range(1, 6)] == [
        0.5, 1.5, 4.5, 10.0, 10.0,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="start at 1"):
        backoff(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base": -1.0},
        {"base": 500.0},  # above max_delay
        {"max_delay": float("inf")},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------- parse_retry_after


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("99999999999", 99999999999.0),
        ("-5", None),
        ("+5", None),
        ("5s", None),
        ("1e3", None),
        ("inf", None),
        ("nan", None),
        ("1_000", None),
        ("١٢٣", None),  # Arabic-Indic digits: not delta-seconds
        ("soon", None),
        ("1" * 65, None),  # absurdly long
        (http_date(120), 120.0),
        (http_date(0), 0.0),
        (http_date(-60), 0.0),  # a date in the past means now
        ("Fri, 15 Jan 2027 08:02:00 -0000", 1_800_000_120.0 - NOW),  # no zone: UTC
        ("Fri, 15 Jan 2027 10:02:00 +0200", 1_800_000_120.0 - NOW),
        ("Fri, 32 Jan 2027 08:00:00 GMT", None),
        ("Mon, 99 Foo 99999 1:2:3 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds
