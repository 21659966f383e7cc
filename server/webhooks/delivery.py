"""The delivery engine: one task per delivery, bounded concurrency per endpoint, retries.

    task = engine.deliver(endpoint, notice, msg_id)      # an asyncio.Task[Outcome]
    outcome = await task                                 # delivered, or ended final

A delivery renders its body once, then makes attempts: each is signed afresh (Standard
Webhooks: the same ``webhook-id`` on every attempt, a new ``webhook-timestamp``), sent through
the one SSRF-safe client, and judged by the one decision function (``retry.decide``). A retry
sleeps *without* holding one of the endpoint's ``concurrency`` slots, so a receiver being
retried never blocks the deliveries behind it from their first try. ``after`` orders deliveries
of one alert (its firing before its resolved) on one endpoint. Each attempt goes to the newest
version of its endpoint the engine knows (``update``, and every ``deliver``): a retry after the
developer changed the URL, format or routing key, or rotated the secret, is sent, rendered and
signed as the endpoint is now, not as it was when the delivery started.

Per endpoint, in memory only (persisted only with saved monitoring, issue 5): the pending
count (past ``queue_limit`` a delivery ends final at once), the last ``LAST_ATTEMPTS`` attempts
(status, latency, outcome — never a request or response body), and health:

- healthy — the last attempt succeeded, or none failed yet;
- unhealthy — attempts have been failing for ``unhealthy_after`` seconds;
- disabled — a 410, or failing for ``disable_after`` seconds: the endpoint row is switched off
  (``enabled = false`` with a reason, visible in the API) and its pending deliveries end final.
  Enabling it again through the API starts it afresh.

Counted at ``/metrics``: ``webhook_attempts{format, outcome}``, ``webhook_deliveries{outcome}``
and the ``webhook_pending`` gauge. Times for health come from the injected clock; signature
timestamps are the real wall clock, which receivers check against theirs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from server.clock import Clock
from server.stats import Counter, Stats
from server.storage.webhooks import WebhookEndpoint
from server.webhooks.client import Attempt, WebhookClient
from server.webhooks.formats import Notice, render
from server.webhooks.retry import DEFAULT_POLICY, Decision, RetryPolicy, decide
from server.webhooks.signing import sign_headers

log = logging.getLogger("oneconnect.server.webhooks")

LAST_ATTEMPTS: Final = 20
_ATTEMPTS_HELP: Final = "Webhook delivery attempts, by format and outcome"
_DELIVERIES_HELP: Final = "Webhook deliveries ended, by outcome"


@dataclass(frozen=True, slots=True)
class AttemptLog:
    """One attempt as the API shows it."""

    at: float
    msg_id: str
    number: int
    status: int | None
    latency: float
    outcome: str
    """delivered | retry | final | disable"""
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "webhook_id": self.msg_id,
            "attempt": self.number,
            "status": self.status,
            "latency_ms": round(self.latency * 1000, 1),
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    attempts: int
    reason: str
    """Why it ended: the decision's reason, or why no attempt was made."""


@dataclass(slots=True)
class _EndpointState:
    slots: asyncio.Semaphore
    pending: int = 0
    failing_since: float | None = None
    consecutive_failures: int = 0
    last_success_at: float | None = None
    stopped: str | None = None
    """Set when the endpoint was disabled or deleted: pending deliveries end with this."""
    endpoint: WebhookEndpoint | None = None
    """The newest version of the endpoint seen (by ``updated_at``): what attempts go to."""
    attempts: deque[AttemptLog] = field(default_factory=lambda: deque(maxlen=LAST_ATTEMPTS))


class DeliveryEngine:
    def __init__(
        self,
        client: WebhookClient,
        *,
        stats: Stats,
        clock: Clock,
        disable: Callable[[WebhookEndpoint, str], Awaitable[None]],
        policy: RetryPolicy = DEFAULT_POLICY,
        concurrency: int = 8,
        queue_limit: int = 10_000,
        unhealthy_after: float = 600.0,
        disable_after: float = 86_400.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.stats = stats
        self.clock = clock
        self._disable = disable
        self.policy = policy
        self.concurrency = concurrency
        self.queue_limit = queue_limit
        self.unhealthy_after = unhealthy_after
        self.disable_after = disable_after
        self._wall = wall
        self._states: dict[str, _EndpointState] = {}
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self._counters: dict[tuple[str, ...], Counter] = {}
        self.on_attempt: list[Callable[[WebhookEndpoint, AttemptLog], None]] = []
        """Called with every attempt made (saved monitoring records them for opted-in accounts)."""
        stats.gauge(
            "webhook_pending", "Webhook deliveries not yet delivered or final", self.pending
        )

    # -- state -------------------------------------------------------------------------------
    def _state(self, endpoint_id: str) -> _EndpointState:
        state = self._states.get(endpoint_id)
        if state is None:
            state = self._states[endpoint_id] = _EndpointState(asyncio.Semaphore(self.concurrency))
        return state

    def pending(self) -> float:
        return float(sum(s.pending for s in self._states.values()))

    def health(self, endpoint: WebhookEndpoint) -> dict[str, Any]:
        """What the API shows about an endpoint's deliveries."""
        state = self._states.get(endpoint.id)
        failing_since = state.failing_since if state else None
        if not endpoint.enabled:
            status = "disabled"
        elif failing_since is not None and (
            self.clock.time() - failing_since >= self.unhealthy_after
        ):
            status = "unhealthy"
        else:
            status = "healthy"
        return {
            "status": status,
            "failing_since": failing_since,
            "consecutive_failures": state.consecutive_failures if state else 0,
            "last_success_at": state.last_success_at if state else None,
            "pending": state.pending if state else 0,
            "last_attempts": [a.as_json() for a in reversed(state.attempts)] if state else [],
        }

    def stop(self, endpoint_id: str, reason: str) -> None:
        """The endpoint was deleted or switched off: its pending deliveries end final."""
        state = self._states.get(endpoint_id)
        if state is not None:
            state.stopped = reason

    def restart(self, endpoint_id: str) -> None:
        """The endpoint was (re-)enabled or its URL changed: health starts afresh."""
        state = self._states.get(endpoint_id)
        if state is not None:
            state.stopped = None
            state.failing_since = None
            state.consecutive_failures = 0

    def update(self, endpoint: WebhookEndpoint) -> None:
        """A newer version of an endpoint (the API changed it or rotated its secret): the
        attempts still to come of deliveries already under way use it."""
        state = self._states.get(endpoint.id)
        if state is not None:
            _keep_newest(state, endpoint)

    def forget(self, endpoint_id: str) -> None:
        self.stop(endpoint_id, "endpoint deleted")
        state = self._states.get(endpoint_id)
        if state is not None and state.pending == 0:
            del self._states[endpoint_id]

    # -- delivering --------------------------------------------------------------------------
    def deliver(
        self,
        endpoint: WebhookEndpoint,
        notice: Notice,
        msg_id: str,
        *,
        after: asyncio.Future[Any] | None = None,
    ) -> asyncio.Task[Outcome]:
        """Start one delivery (see the module docstring); must run inside the event loop."""
        state = self._state(endpoint.id)
        _keep_newest(state, endpoint)
        state.pending += 1
        task = asyncio.get_running_loop().create_task(
            self._run(endpoint, state, notice, msg_id, after)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(
        self,
        endpoint: WebhookEndpoint,
        state: _EndpointState,
        notice: Notice,
        msg_id: str,
        after: asyncio.Future[Any] | None,
    ) -> Outcome:
        try:
            if state.pending > self.queue_limit:
                return self._ended(endpoint, "dropped", 0, "too many pending deliveries")
            if after is not None and not after.done():
                await asyncio.wait([after])
            number = 0
            body = b""
            rendered_for: WebhookEndpoint | None = None
            while True:
                if state.stopped is not None:
                    return self._ended(endpoint, "final", number, state.stopped)
                current = state.endpoint or endpoint
                if rendered_for is None or _renders_apart(rendered_for, current):
                    try:
                        body = _render(current, notice)
                    except ValueError as exc:
                        return self._ended(current, "final", number, f"cannot render: {exc}")
                rendered_for = endpoint = current
                number += 1
                _, decision = await self._attempt(endpoint, state, body, msg_id, number)
                if decision.action == "retry":
                    assert decision.delay is not None
                    await asyncio.sleep(decision.delay)
                    continue
                if decision.action == "disable":
                    await self._switch_off(endpoint, state, decision.reason)
                return self._ended(
                    endpoint,
                    "delivered" if decision.action == "delivered" else "final",
                    number,
                    decision.reason,
                )
        finally:
            state.pending -= 1

    async def _attempt(
        self,
        endpoint: WebhookEndpoint,
        state: _EndpointState,
        body: bytes,
        msg_id: str,
        number: int,
    ) -> tuple[Attempt, Decision]:
        async with state.slots:
            headers = sign_headers(
                endpoint.signing_secrets(self.clock.time()), msg_id, int(self._wall()), body
            )
            attempt = await self.client.post(endpoint.url, body, headers)
        now = self.clock.time()
        decision = decide(attempt, number, now=self._wall(), policy=self.policy)
        self._record(endpoint, state, msg_id, number, attempt, decision, now)
        if decision.action not in ("delivered", "disable") and self.disable_after > 0:
            since = state.failing_since
            if since is not None and now - since >= self.disable_after:
                await self._switch_off(
                    endpoint, state, f"failing for more than {self.disable_after:g} s"
                )
        return attempt, decision

    async def send_once(
        self, endpoint: WebhookEndpoint, notice: Notice, msg_id: str
    ) -> tuple[Attempt, Decision]:
        """One attempt, no retries (``POST /webhooks/{id}/test``); recorded like any other."""
        state = self._state(endpoint.id)
        _keep_newest(state, endpoint)
        body = _render(endpoint, notice)
        attempt, decision = await self._attempt(endpoint, state, body, msg_id, 1)
        if decision.action == "disable":
            await self._switch_off(endpoint, state, decision.reason)
        return attempt, decision

    def _record(
        self,
        endpoint: WebhookEndpoint,
        state: _EndpointState,
        msg_id: str,
        number: int,
        attempt: Attempt,
        decision: Decision,
        now: float,
    ) -> None:
        self._count(
            "webhook_attempts", _ATTEMPTS_HELP, format=endpoint.format, outcome=decision.action
        )
        if decision.action == "delivered":
            state.failing_since = None
            state.consecutive_failures = 0
            state.last_success_at = now
        else:
            if state.failing_since is None:
                state.failing_since = now
            state.consecutive_failures += 1
        entry = AttemptLog(
            now, msg_id, number, attempt.status, attempt.latency, decision.action, decision.reason
        )
        state.attempts.append(entry)
        for hook in self.on_attempt:
            hook(endpoint, entry)

    async def _switch_off(
        self, endpoint: WebhookEndpoint, state: _EndpointState, reason: str
    ) -> None:
        if state.stopped is not None:
            return
        state.stopped = f"endpoint disabled: {reason}"
        log.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
        try:
            await self._disable(endpoint, reason)
        except Exception as exc:  # storage down: the in-memory stop still holds
            log.error("could not store that endpoint %s is disabled (%s)", endpoint.id,
                      exc.__class__.__name__)  # fmt: skip

    def _ended(
        self, endpoint: WebhookEndpoint, outcome: str, attempts: int, reason: str
    ) -> Outcome:
        self._count("webhook_deliveries", _DELIVERIES_HELP, outcome=outcome)
        if outcome != "delivered":
            log.info("webhook delivery to endpoint %s ended %s: %s", endpoint.id, outcome, reason)
        return Outcome(outcome == "delivered", attempts, reason)

    def _count(self, name: str, help: str, **labels: str) -> None:
        """The counter ``name{labels}`` += 1, each series bound once (this runs on every
        attempt)."""
        key = (name, *labels.values())
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.stats.counter(name, help, **labels)
        counter.add()

    async def close(self) -> None:
        """Cancel every delivery still running (shutdown); their events stay unacked."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.close()


def _keep_newest(state: _EndpointState, endpoint: WebhookEndpoint) -> None:
    known = state.endpoint
    if known is None or endpoint.updated_at >= known.updated_at:
        state.endpoint = endpoint


def _renders_apart(a: WebhookEndpoint, b: WebhookEndpoint) -> bool:
    """Whether a body rendered for ``a`` differs from one for ``b``."""
    return (a.format, a.name, a.routing_key) != (b.format, b.name, b.routing_key)


def _render(endpoint: WebhookEndpoint, notice: Notice) -> bytes:
    """The body for this version of the endpoint (its format, name and routing key)."""
    if (notice.endpoint_name, notice.routing_key) != (endpoint.name, endpoint.routing_key):
        notice = replace(notice, endpoint_name=endpoint.name, routing_key=endpoint.routing_key)
    return render(endpoint.format, notice)  # type: ignore[arg-type]
