"""LiveState and Dispatcher on their own: bounded rings, latest values, dedupe, current alerts."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings, strategies as st

from agent.protocol import AlertEvent, Hello, Metrics, WireSample
from server import live as live_mod
from server.clock import FakeClock
from server.dispatch import Dispatcher
from server.live import LiveFull, LiveState
from server.stats import Stats
from server.storage.records import NodeRef
from tests.server.streamkit import event, hello, metrics_frame

REF = NodeRef(id="a" * 32, account_id="b" * 32, name="vpn-1", min_interval=1.0)


def make(window: int = 900, **kwargs: int) -> tuple[LiveState, FakeClock]:
    clock = FakeClock()
    return LiveState(window_seconds=window, clock=clock, **kwargs), clock


def frame(*samples: tuple[str, float | str, dict[str, str]]) -> Metrics:
    return Metrics(
        seq=0, ts=0.0, samples=[WireSample(m=m, v=v, l=labels) for m, v, labels in samples]
    )


def test_metrics_land_as_latest_values_and_rings() -> None:
    live, clock = make()
    node = live.connected(REF)
    live.hello(node, hello(interval=5), 5.0)
    assert (node.step, node.capacity) == (5.0, 180)
    live.metrics(node, metrics_frame(1, cpu=10.0, peers="<5"))
    clock.advance(5)
    live.metrics(node, metrics_frame(2, cpu=20.0, peers="<5"))
    latest = {(m, tuple(labels.items())): v for m, labels, v in live.latest(REF.id)}
    assert latest[("cpu_usage_percent", ())] == 20.0
    assert latest[("vpn_active_peers", ())] == "<5"  # coarsened values stay what was sent
    assert latest[("iface_up", (("iface", "wg0"),))] == 1.0
    views = {v.metric: v for v in live.series(REF.id)}
    cpu = [value for _, value in views["cpu_usage_percent"].points]
    assert len(cpu) == 180
    assert cpu[-2:] == [10.0, 20.0]
    assert all(v is None for v in cpu[:-2])
    assert all(v is None for _, v in views["vpn_active_peers"].points)  # NaN in the ring
    times = [t for t, _ in views["cpu_usage_percent"].points]
    assert times == sorted(times)
    assert times[-1] == pytest.approx(clock.time(), abs=5)


def test_only_requested_metrics() -> None:
    live, _ = make()
    node = live.connected(REF)
    live.metrics(node, metrics_frame(1))
    assert [m for m, _, _ in live.latest(REF.id, ["cpu_usage_percent"])] == ["cpu_usage_percent"]
    assert [v.metric for v in live.series(REF.id, {"iface_up"})] == ["iface_up"]


def test_a_fast_agent_is_stored_at_most_max_points_per_window() -> None:
    live, clock = make()
    node = live.connected(REF)
    live.hello(node, hello(interval=1), 1.0)
    assert node.step == 3.0
    assert node.capacity == 300
    for i in range(2000):
        live.metrics(node, frame(("x", float(i), {})))
        clock.advance(1)
    (view,) = live.series(REF.id)
    assert len(view.points) == 300
    values = [v for _, v in view.points if v is not None]
    assert values[-1] == 1999.0  # the last sample of a bucket wins
    assert len(node.series[("x", ())].ring) == 300


def test_old_samples_leave_the_window_and_gaps_read_as_none() -> None:
    live, clock = make(window=60)
    node = live.connected(REF)
    live.hello(node, hello(interval=5), 5.0)
    live.metrics(node, frame(("x", 1.0, {})))
    clock.advance(20)
    live.metrics(node, frame(("x", 2.0, {})))
    values = [v for _, v in live.series(REF.id)[0].points]
    assert values[-5:] == [1.0, None, None, None, 2.0]
    clock.advance(60)
    assert all(v is None for _, v in live.series(REF.id)[0].points)
    clock.advance(3600)  # a gap longer than the ring: reset, not a loop over the gap
    live.metrics(node, frame(("x", 3.0, {})))
    assert [v for _, v in live.series(REF.id)[0].points if v is not None] == [3.0]


def test_series_caps_per_node_and_in_total() -> None:
    live, _ = make(max_series=5, max_total_series=8)
    node = live.connected(REF)
    kept = live.metrics(node, frame(*((f"m{i}", 1.0, {}) for i in range(10))))
    assert kept == 5
    assert len(node.series) == 5
    assert node.dropped_samples == 5
    other = live.connected(NodeRef("c" * 32, "b" * 32, "vpn-2", 1.0))
    assert live.metrics(other, frame(*((f"m{i}", 1.0, {}) for i in range(10)))) == 3
    assert live.total_series == 8
    live.forget(REF.id)
    assert live.total_series == 3
    assert REF.id not in live
    assert live.metrics(other, frame(*((f"m{i}", 1.0, {}) for i in range(10)))) == 5


def test_node_table_is_bounded() -> None:
    live, _ = make(max_nodes=2)
    live.connected(REF)
    live.track(NodeRef("c" * 32, "b" * 32, "vpn-2", 1.0))
    with pytest.raises(LiveFull):
        live.track(NodeRef("d" * 32, "b" * 32, "vpn-3", 1.0))
    live.track(REF)  # an existing node is still fine


def test_changed_interval_restarts_the_rings() -> None:
    live, _ = make()
    node = live.connected(REF)
    live.hello(node, hello(interval=5), 5.0)
    live.metrics(node, metrics_frame(1))
    assert live.total_series == 3
    live.hello(node, hello(interval=30), 30.0)
    assert node.capacity == 30
    assert node.series == {}
    assert live.total_series == 0
    live.hello(node, hello(interval=30), 30.0)


def test_seen_event_is_a_bounded_lru() -> None:
    live, _ = make()
    live.connected(REF)
    assert not live.seen_event(REF.id, "evt-00000000")
    assert live.seen_event(REF.id, "evt-00000000")
    for i in range(1, live_mod.MAX_SEEN_IDS + 1):
        live.seen_event(REF.id, f"evt-{i:08d}")
    node = live.get(REF.id)
    assert node is not None
    assert len(node.seen) == live_mod.MAX_SEEN_IDS
    assert not live.seen_event(REF.id, "evt-00000000")  # the oldest was evicted
    assert live.seen_event(REF.id, f"evt-{live_mod.MAX_SEEN_IDS:08d}")


def test_firing_adds_resolved_removes_and_stale_events_are_ignored() -> None:
    live, _ = make()
    live.connected(REF)
    assert live.record_event(REF.id, event(1))
    assert [e.id for e in live.current_alerts(REF.id)] == ["evt-00000001"]
    assert live.record_event(REF.id, event(3, status="resolved"))
    assert live.current_alerts(REF.id) == []
    assert not live.record_event(REF.id, event(2))  # older than the resolution
    assert live.current_alerts(REF.id) == []
    assert live.record_event(REF.id, event(4))  # fires again
    assert not live.record_event(REF.id, event(3, status="resolved"))
    assert [e.id for e in live.recent_events(REF.id)] == [
        "evt-00000001",
        "evt-00000003",
        "evt-00000004",
    ]


def test_current_alerts_and_recent_events_are_bounded() -> None:
    live, _ = make()
    live.connected(REF)
    for i in range(live_mod.MAX_CURRENT_ALERTS + 5):
        live.record_event(REF.id, event(i, fingerprint=f"{i:016x}"))
    assert len(live.current_alerts(REF.id)) == live_mod.MAX_CURRENT_ALERTS
    assert len(live.recent_events(REF.id)) == live_mod.MAX_RECENT_EVENTS
    fingerprints = {e.fingerprint for e in live.current_alerts(REF.id)}
    assert f"{0:016x}" not in fingerprints  # the oldest made room


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),  # series index
            st.one_of(
                st.floats(allow_nan=False, allow_infinity=False, width=64),
                st.sampled_from(["<5", "<10"]),
            ),
            st.floats(0, 50),  # seconds to advance
        ),
        max_size=120,
    ),
    st.sampled_from([1.0, 2.5, 5.0, 60.0]),
)
def test_rings_stay_bounded_and_latest_is_the_last_sent(
    steps: list[tuple[int, float | str, float]], interval: float
) -> None:
    live, clock = make(window=120, max_series=30)
    node = live.connected(REF)
    live.hello(node, Hello(agent_version="x", interval=interval, buffer_seconds=0), interval)
    last: dict[str, float | str] = {}
    for index, value, advance in steps:
        name = f"s{index}"
        if live.metrics(node, frame((name, value, {}))):
            last[name] = value
        clock.advance(advance)
    assert len(node.series) <= 30
    for m, _, value in live.latest(REF.id):
        assert value == last[m]
    for view in live.series(REF.id):
        assert len(view.points) == node.capacity <= live_mod.MAX_POINTS
        assert all(v is None or not math.isnan(v) for _, v in view.points)


_UNIVERSE = [("a", {}), ("b", {}), ("c", {"iface": "wg0"}), ("c", {"iface": "wg1"}), ("d", {})]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.permutations(range(len(_UNIVERSE))).flatmap(
                lambda order: st.integers(0, len(order)).map(lambda n: order[:n])
            ),
            st.lists(st.one_of(st.integers(-1000, 1000), st.just("<5")), min_size=5, max_size=5),
            st.sampled_from([0.0, 0.5, 1.0, 3.0, 7.0, 200.0]),
        ),
        max_size=60,
    )
)
def test_rings_match_a_reference_model(
    frames: list[tuple[list[int], list[int | str], float]],
) -> None:
    """Whatever the series order and timing (the layout fast path or the lookups), the window
    holds, per bucket, the last value sent — checked against a plain dict model."""
    live, clock = make(window=60)
    node = live.connected(REF)
    live.hello(node, hello(interval=2), 2.0)
    step, capacity = node.step, node.capacity
    reference: dict[tuple[str, str], dict[int, float | None]] = {}
    for order, values, advance in frames:
        bucket = int(clock.monotonic() // step)
        samples = []
        for position, index in enumerate(order):
            metric, labels = _UNIVERSE[index]
            value: float | str = values[position]
            value = float(value) if isinstance(value, int) else value
            samples.append((metric, value, labels))
            stored = None if isinstance(value, str) else value
            reference.setdefault((metric, str(labels)), {})[bucket] = stored
        live.metrics(node, frame(*samples))
        clock.advance(advance)
    newest = int(clock.monotonic() // step)
    for view in live.series(REF.id):
        expected = reference[(view.metric, str(view.labels))]
        got = [v for _, v in view.points]
        want = [expected.get(b) for b in range(newest - capacity + 1, newest + 1)]
        assert got == want


def test_a_frame_is_cheap() -> None:
    """O(samples): 2,000 frames of 60 series well inside a second (≈ 25 µs a frame here)."""
    live, clock = make()
    node = live.connected(REF)
    live.hello(node, hello(interval=1), 1.0)
    frames = [
        frame(
            *((f"metric_{i}", float(i + n), {"iface": "wg0"} if i % 4 else {}) for i in range(60))
        )
        for n in range(10)
    ]
    started = time.perf_counter()
    for n in range(2000):
        live.metrics(node, frames[n % 10])
        clock.advance(1)
    assert time.perf_counter() - started < 1.0


# -- the dispatcher -----------------------------------------------------------------------------


async def test_dispatcher_dedupes_records_and_counts() -> None:
    live, _ = make()
    stats = Stats()
    dispatcher = Dispatcher(live=live, stats=stats)
    delivered: list[AlertEvent] = []

    async def sink(node: NodeRef, evt: AlertEvent) -> None:
        delivered.append(evt)

    dispatcher.sinks.append(sink)
    assert await dispatcher.submit(REF, event(1))
    assert not await dispatcher.submit(REF, event(1))
    assert [e.id for e in live.current_alerts(REF.id)] == ["evt-00000001"]
    assert [e.id for e in delivered] == ["evt-00000001"]
    assert stats.value("alert_events", status="firing") == 1
    assert stats.value("alert_events_duplicate") == 1
    assert await dispatcher.submit(REF, event(2, status="resolved"))
    assert live.current_alerts(REF.id) == []


async def test_a_failing_sink_lets_the_resend_through() -> None:
    live, _ = make()
    dispatcher = Dispatcher(live=live, stats=Stats())
    failures = [RuntimeError("webhook down")]

    async def flaky(node: NodeRef, evt: AlertEvent) -> None:
        if failures:
            raise failures.pop()

    dispatcher.sinks.append(flaky)
    with pytest.raises(RuntimeError):
        await dispatcher.submit(REF, event(1))
    assert await dispatcher.submit(REF, event(1))  # handled afresh, not a duplicate
    assert not await dispatcher.submit(REF, event(1))
