"""The one function that decides what follows a webhook attempt: delivered, retry, final, disable.

    decision = decide(attempt, number, now=clock.time())

Every other module asks :func:`decide`; nothing else looks at a status code to choose. The
rules (``number`` is the 1-based number of the attempt just made):

==========================================  ==========================================
the attempt                                 the decision
==========================================  ==========================================
2xx                                         delivered
410 Gone                                    disable — the endpoint says it no longer exists
408, 425, 429, 5xx                          retry
3xx                                         final — redirects are not followed (a
                                            redirect could lead anywhere; the developer
                                            should register the final URL)
other 4xx, 1xx, anything outside 100..599   final — sending it again will not change it
error blocked / invalid_url                 final
error timeout / connect / tls / protocol    retry — the network, or the receiver, may
                                            recover
a retry when ``number >= max_attempts``     final, "gave up after N attempts: …"
==========================================  ==========================================

A retry waits :func:`backoff` (exponential with ± jitter, capped at ``max_delay``), or as
long as the response's Retry-After asks if that is longer — honoured on every retried
status (it matters for 429 and 503), capped at ``max_delay`` too, so a receiver cannot park
a delivery for a day. A TLS error is retried because an expired certificate is usually
renewed within the retry window; a blocked target is not, because only configuration
changes it.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final, Literal

from server.webhooks.client import Attempt

Action = Literal["delivered", "retry", "final", "disable"]

RETRY_STATUSES: Final = frozenset({408, 425, 429})
"""4xx statuses that mean "not now" rather than "never"; every 5xx retries as well."""
FINAL_ERRORS: Final = frozenset({"blocked", "invalid_url"})
RETRY_ERRORS: Final = frozenset({"timeout", "connect", "tls", "protocol"})

_DELTA_SECONDS: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # ASCII digits only
_MAX_HEADER: Final = 64
"""Longer Retry-After values are garbage, not dates or delays."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base: float = 1.0
    """First retry delay, seconds."""
    factor: float = 2.0
    max_delay: float = 300.0
    """Cap on the backoff and on Retry-After, seconds."""
    jitter: float = 0.2
    """± fraction of the delay, so retries of many deliveries spread out."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not (0 <= self.base <= self.max_delay and math.isfinite(self.max_delay)):
            raise ValueError("base and max_delay must satisfy 0 <= base <= max_delay < inf")
        if not (1 <= self.factor < math.inf):
            raise ValueError("factor must be at least 1")
        if not (0 <= self.jitter < 1):
            raise ValueError("jitter must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float | None
    """Seconds until the next attempt (retry only)."""
    reason: str


DEFAULT_POLICY: Final = RetryPolicy()


def backoff(
    number: int, policy: RetryPolicy = DEFAULT_POLICY, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt ``number``: base·factor^(number−1), ± jitter, capped.

    ``rand`` returns a float in [0, 1); 0.5 means no jitter.
    """
    if number < 1:
        raise ValueError("attempt numbers start at 1")
    try:
        raw = policy.base * policy.factor ** (number - 1)
    except OverflowError:
        raw = policy.max_delay
    jittered = raw * (1.0 + policy.jitter * (2.0 * rand() - 1.0))
    return max(0.0, min(policy.max_delay, jittered))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After value asks for: delta-seconds or an HTTP-date relative to ``now``.

    ``now`` is epoch seconds. A date in the past means "now" (0.0). Garbage, negative
    numbers and absurdly long values give None.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, origin unknown (RFC 5322)
        return max(0.0, when.replace(tzinfo=UTC).timestamp() - now)
    return max(0.0, when.timestamp() - now)


def decide(
    attempt: Attempt,
    number: int,
    *,
    now: float,
    policy: RetryPolicy = DEFAULT_POLICY,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What follows ``attempt``, attempt number ``number`` (1-based) of one delivery."""
    if number < 1:
        raise ValueError("attempt numbers start at 1")
    if attempt.error is not None:
        reason = attempt.detail or attempt.error
        if attempt.error in RETRY_ERRORS:
            return _retry(reason, number, None, policy, rand)
        return Decision("final", None, reason)
    status = attempt.status
    if status is None:
        return Decision("final", None, attempt.detail or "no response and no error")
    if 200 <= status < 300:
        return Decision("delivered", None, f"HTTP {status}")
    if status == 410:
        return Decision("disable", None, "endpoint gone (410)")
    if status in RETRY_STATUSES or 500 <= status < 600:
        wait = parse_retry_after(attempt.retry_after, now)
        return _retry(f"HTTP {status}", number, wait, policy, rand)
    if 300 <= status < 400:
        return Decision("final", None, f"HTTP {status}: redirects are not followed")
    if 400 <= status < 500:
        return Decision("final", None, f"HTTP {status}")
    return Decision("final", None, f"unexpected HTTP status {status}")


def _retry(
    reason: str,
    number: int,
    retry_after: float | None,
    policy: RetryPolicy,
    rand: Callable[[], float],
) -> Decision:
    if number >= policy.max_attempts:
        plural = "" if number == 1 else "s"
        return Decision("final", None, f"gave up after {number} attempt{plural}: {reason}")
    delay = backoff(number, policy, rand)
    if retry_after is not None and retry_after > delay:
        delay = min(policy.max_delay, retry_after)
        reason = f"{reason}, Retry-After {retry_after:g} s"
    return Decision("retry", delay, reason)
