"""The alert outbox: alert events held in RAM until the server acks their ids.

Events leave the outbox only when acked (or, when it is full, when a newer event for the same
alert makes them obsolete). Bounded: when full, events superseded by a newer event of the same
fingerprint go first (the newest per fingerprint stays; a resolved event carries ``started_at``,
so it still makes sense to the server if its firing never arrived); only when every fingerprint is
distinct is the oldest event dropped. The event just added is never the one dropped.

add, ack and mark_sent are O(1) per id; due, reset_sent and next_resend_at walk the (bounded)
outbox once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agent.wire import AlertEvent

log = logging.getLogger("oneconnect." + __name__)


class _Entry:
    __slots__ = ("event", "sent_at")

    def __init__(self, event: AlertEvent) -> None:
        self.event = event
        self.sent_at: float | None = None


class Outbox:
    """Unacked alert events, oldest first."""

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError(f"outbox capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.dropped = 0
        """Events dropped unacked although no newer event of their alert was held."""
        self.coalesced = 0
        """Events dropped because a newer event of the same fingerprint superseded them."""
        self._entries: dict[str, _Entry] = {}  # insertion order = oldest first
        self._latest: dict[str, str] = {}  # fingerprint -> id of its newest held event
        self._superseded: dict[str, None] = {}  # ids with a newer event held, oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._entries

    def add(self, event: AlertEvent) -> None:
        """Hold ``event`` until acked. Re-adding a held id replaces the event in place."""
        held = self._entries.get(event.id)
        if held is not None:
            held.event = event
            return
        if len(self._entries) >= self.capacity:
            self._make_room()
        previous = self._latest.get(event.fingerprint)
        if previous is not None:
            self._superseded[previous] = None
        self._latest[event.fingerprint] = event.id
        self._entries[event.id] = _Entry(event)

    def ack(self, ids: Iterable[str]) -> int:
        """Forget the acked events; returns how many were held (unknown ids are ignored)."""
        return sum(1 for event_id in ids if self._remove(event_id))

    def pending(self) -> list[AlertEvent]:
        return [entry.event for entry in self._entries.values()]

    def due(self, now: float, resend_after: float) -> list[AlertEvent]:
        """Events never sent on this connection, or sent ``resend_after`` seconds ago or more."""
        return [
            entry.event
            for entry in self._entries.values()
            if entry.sent_at is None or now - entry.sent_at >= resend_after
        ]

    def next_resend_at(self, resend_after: float) -> float | None:
        """When the next event falls due (a time in the past if one is due now), or None."""
        earliest: float | None = None
        for entry in self._entries.values():
            if entry.sent_at is None:
                return float("-inf")
            if earliest is None or entry.sent_at < earliest:
                earliest = entry.sent_at
        return None if earliest is None else earliest + resend_after

    def mark_sent(self, ids: Iterable[str], now: float) -> None:
        for event_id in ids:
            entry = self._entries.get(event_id)
            if entry is not None:
                entry.sent_at = now

    def reset_sent(self) -> None:
        """A new connection: every held event is due again."""
        for entry in self._entries.values():
            entry.sent_at = None

    def _make_room(self) -> None:
        if self._superseded:  # always a subset of the held ids
            self._remove(next(iter(self._superseded)))
            self.coalesced += 1
            return
        oldest = next(iter(self._entries.values())).event
        self._remove(oldest.id)
        self.dropped += 1
        log.warning(
            "alert outbox full (%d events, every alert distinct): dropped the oldest unacked "
            "event %s of rule %s",
            self.capacity,
            oldest.id,
            oldest.rule,
        )

    def _remove(self, event_id: str) -> bool:
        entry = self._entries.pop(event_id, None)
        self._superseded.pop(event_id, None)
        if entry is None:
            return False
        fingerprint = entry.event.fingerprint
        if self._latest.get(fingerprint) == event_id:
            del self._latest[fingerprint]
        return True
