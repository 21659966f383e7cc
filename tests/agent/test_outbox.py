from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings, strategies as st

from agent.outbox import Outbox
from agent.wire import AlertEvent, AlertStatus


def event(
    n: int, fingerprint: int = 0, status: AlertStatus = "firing", started_at: float = 100.0
) -> AlertEvent:
    return AlertEvent(
        id=f"evt-{n:08d}",
        fingerprint=f"{fingerprint:016x}",
        rule="cpu_high",
        status=status,
        severity="warning",
        metric="cpu.percent",
        value=97.0,
        threshold=90.0,
        started_at=started_at,
        ended_at=None if status == "firing" else started_at + 60,
        ts=started_at + n,
    )


def ids(events: list[AlertEvent]) -> list[str]:
    return [e.id for e in events]


def test_holds_events_oldest_first_until_acked() -> None:
    box = Outbox()
    for n in range(3):
        box.add(event(n, fingerprint=n))
    assert len(box) == 3
    assert ids(box.pending()) == ["evt-00000000", "evt-00000001", "evt-00000002"]
    assert box.ack(["evt-00000001", "unknown-id-1", "evt-00000001"]) == 1
    assert ids(box.pending()) == ["evt-00000000", "evt-00000002"]
    assert "evt-00000000" in box
    assert "evt-00000001" not in box
    assert box.ack(["evt-00000000", "evt-00000002"]) == 2
    assert len(box) == 0
    assert box.pending() == []


def test_re_adding_an_id_keeps_one_copy_in_place() -> None:
    box = Outbox()
    box.add(event(0, fingerprint=0))
    box.add(event(1, fingerprint=1))
    box.add(event(0, fingerprint=0))
    assert ids(box.pending()) == ["evt-00000000", "evt-00000001"]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Outbox(capacity=0)


def test_full_outbox_coalesces_superseded_events_first() -> None:
    box = Outbox(capacity=3)
    box.add(event(0, fingerprint=7))  # firing of alert 7
    box.add(event(1, fingerprint=8))
    box.add(event(2, fingerprint=7, status="resolved"))  # supersedes event 0
    box.add(event(3, fingerprint=9))  # full: event 0 goes, not the oldest distinct alert
    assert ids(box.pending()) == ["evt-00000001", "evt-00000002", "evt-00000003"]
    assert (box.coalesced, box.dropped) == (1, 0)
    resolved = box.pending()[1]
    assert resolved.status == "resolved"
    assert resolved.started_at == 100.0  # the server can place it without its firing


def test_coalescing_keeps_the_newest_event_per_fingerprint() -> None:
    box = Outbox(capacity=4)
    for n in range(10):
        box.add(event(n, fingerprint=n % 2))
    assert len(box) == 4
    newest = {e.fingerprint: e.id for e in box.pending()}
    assert newest == {f"{0:016x}": "evt-00000008", f"{1:016x}": "evt-00000009"}
    assert box.coalesced == 6
    assert box.dropped == 0


def test_all_distinct_drops_the_oldest_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(capacity=2)
    with caplog.at_level(logging.WARNING, logger="oneconnect.agent.outbox"):
        for n in range(4):
            box.add(event(n, fingerprint=n))
    assert ids(box.pending()) == ["evt-00000002", "evt-00000003"]
    assert (box.dropped, box.coalesced) == (2, 0)
    assert "outbox full" in caplog.text


def test_acked_newest_leaves_older_superseded_event_first_to_go() -> None:
    box = Outbox(capacity=2)
    box.add(event(0, fingerprint=1))
    box.add(event(1, fingerprint=1, status="resolved"))
    assert box.ack(["evt-00000001"]) == 1
    box.add(event(2, fingerprint=2))
    box.add(event(3, fingerprint=3))  # event 0 is stale (a newer state was acked): it goes
    assert ids(box.pending()) == ["evt-00000002", "evt-00000003"]
    assert box.coalesced == 1


def test_due_and_resend_logic() -> None:
    box = Outbox()
    box.add(event(0, fingerprint=0))
    box.add(event(1, fingerprint=1))
    assert box.next_resend_at(30.0) == float("-inf")
    assert ids(box.due(now=1000.0, resend_after=30.0)) == ["evt-00000000", "evt-00000001"]
    box.mark_sent(["evt-00000000", "evt-00000001", "unknown-id-1"], now=1000.0)
    assert box.due(now=1010.0, resend_after=30.0) == []
    assert box.next_resend_at(30.0) == 1030.0
    box.add(event(2, fingerprint=2))
    assert ids(box.due(now=1010.0, resend_after=30.0)) == ["evt-00000002"]
    box.mark_sent(["evt-00000002"], now=1010.0)
    assert ids(box.due(now=1030.0, resend_after=30.0)) == ["evt-00000000", "evt-00000001"]
    box.reset_sent()  # a new connection: everything is due again
    assert len(box.due(now=1010.0, resend_after=30.0)) == 3
    box.ack(ids(box.pending()))
    assert box.next_resend_at(30.0) is None


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=8),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(min_value=0, max_value=5)),
            st.tuples(st.just("ack"), st.integers(min_value=0, max_value=60)),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_property_bounded_and_newest_kept(capacity: int, ops: list[tuple[str, int]]) -> None:
    box = Outbox(capacity=capacity)
    added = 0
    newest: str | None = None
    for op, arg in ops:
        if op == "add":
            ev = event(added, fingerprint=arg)
            added += 1
            box.add(ev)
            newest = ev.id
            assert newest in box
        else:
            box.ack([f"evt-{arg:08d}"])
            if newest == f"evt-{arg:08d}":
                newest = None
        assert len(box) <= capacity
        assert len(box.pending()) == len(box)
        if newest is not None:
            assert box.pending()[-1].id == newest
        held = box.pending()
        assert len({e.id for e in held}) == len(held)
    assert box.dropped + box.coalesced <= added
