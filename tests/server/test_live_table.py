"""LiveState's per-node table: columns added in batches, gaps, big values, and nothing per
series for the garbage collector to walk (the pause that broke ingest's latency target)."""

from __future__ import annotations

import gc
import math
import struct

from hypothesis import given, settings, strategies as st

from agent.protocol import MetricsFrame, SampleData
from server import live as live_mod
from server.clock import FakeClock
from server.live import LiveState, NodeLive
from server.storage.records import NodeRef
from tests.server.streamkit import hello


def f32(value: float) -> float:
    """``value`` as the table holds it (float32)."""
    stored: float = struct.unpack("f", struct.pack("f", value))[0]
    return stored


def ref(n: int) -> NodeRef:
    return NodeRef(id=f"{n:032x}", account_id="b" * 32, name=f"vpn-{n}", min_interval=1.0)


def make(window: int = 60, **kwargs: int) -> tuple[LiveState, FakeClock, NodeLive]:
    clock = FakeClock()
    live = LiveState(window_seconds=window, clock=clock, **kwargs)
    node = live.connected(ref(0))
    live.hello(node, hello(interval=2), 2.0)
    return live, clock, node


def sample(m: str, v: float | str, labels: dict[str, str] | None = None) -> SampleData:
    data: SampleData = {"m": m, "v": v}
    if labels is not None:
        data["l"] = labels
    return data


def frame(*samples: SampleData) -> MetricsFrame:
    return MetricsFrame(seq=0, ts=0.0, samples=list(samples))


def test_a_first_frame_sizes_the_table_once_and_later_series_add_columns_in_batches() -> None:
    live, clock, node = make()
    live.metrics(node, frame(*(sample(f"m{i}", float(i)) for i in range(13))))
    assert node.width == 16  # 13 rounded up to COLUMNS_AT_ONCE
    assert live_mod.COLUMNS_AT_ONCE == 8
    clock.advance(2)
    live.metrics(node, frame(*(sample(f"m{i}", float(i) + 100) for i in range(17))))
    assert node.width == 24
    assert len(node.series) == 17
    values = {v.metric: [p for _, p in v.points if p is not None] for v in live.series(ref(0).id)}
    assert values["m3"] == [3.0, 103.0]  # kept across the widening
    assert values["m16"] == [116.0]


def test_series_view_shows_columns_and_rings() -> None:
    live, _, node = make()
    live.metrics(node, frame({"m": "a", "v": 1.5}, {"m": "b", "l": {"x": "y"}, "v": "<5"}))
    assert set(node.series) == {("a", ()), ("b", (("x", "y"),))}
    ring = node.series[("a", ())].ring
    assert len(ring) == node.capacity == 30
    assert sorted(v for v in ring if not math.isnan(v)) == [1.5]
    assert all(math.isnan(v) for v in node.series[("b", (("x", "y"),))].ring)
    assert node.series[("b", (("x", "y"),))].col == 1


def test_values_beyond_float32_are_kept_as_latest_and_read_as_gaps() -> None:
    live, clock, node = make()
    live.metrics(node, frame({"m": "a", "v": 1e300}, {"m": "b", "v": -1e300}))
    clock.advance(2)
    live.metrics(node, frame({"m": "a", "v": 1e300}, {"m": "b", "v": 2.0}))
    assert {m: v for m, _, v in live.latest(ref(0).id)} == {"a": 1e300, "b": 2.0}
    points = {v.metric: [p for _, p in v.points][-2:] for v in live.series(ref(0).id)}
    assert points == {"a": [None, None], "b": [None, 2.0]}


def test_a_long_silence_clears_the_table() -> None:
    live, clock, node = make()
    live.metrics(node, frame({"m": "a", "v": 1.0}))
    clock.advance(3600)
    live.metrics(node, frame({"m": "b", "v": 2.0}))
    points = {v.metric: [p for _, p in v.points if p is not None] for v in live.series(ref(0).id)}
    assert points == {"a": [], "b": [2.0]}


def test_no_object_per_series_for_the_garbage_collector() -> None:
    """200 nodes × 50 series: the GC tracks a handful of objects per node, none per series."""
    clock = FakeClock()
    live = LiveState(window_seconds=900, clock=clock)
    nodes = [live.connected(ref(n)) for n in range(200)]
    one = frame(
        *(
            sample(f"metric_{i}", float(i), {"iface": "wg0"}) if i % 3 else sample(f"m{i}", "<5")
            for i in range(50)
        )
    )
    gc.collect()
    before = len(gc.get_objects())
    for node in nodes:
        live.metrics(node, one)
        clock.advance(1)
        live.metrics(node, one)
    gc.collect()
    gc.collect()  # a tuple of tuples is untracked once its inner ones were
    assert live.total_series == 200 * 50
    per_node = (len(gc.get_objects()) - before) / len(nodes)
    assert per_node < 10, per_node  # 50 series each: the GC walks none of them


_UNIVERSE = [(f"s{i}", {"iface": f"wg{i % 3}"} if i % 2 else {}) for i in range(20)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, len(_UNIVERSE) - 1), unique=True, max_size=len(_UNIVERSE)),
            st.lists(st.one_of(st.floats(-1e6, 1e6), st.just("<5")), min_size=20, max_size=20),
            st.sampled_from([0.0, 1.0, 2.0, 5.0, 40.0, 100.0]),
        ),
        max_size=40,
    )
)
def test_widening_and_gaps_match_a_reference_model(
    frames: list[tuple[list[int], list[float | str], float]],
) -> None:
    """Series arriving over time (so the table widens past 8, 16 columns), in any order, with
    pauses: each bucket holds the last value sent in it — checked against a plain dict."""
    live, clock, node = make(window=60)
    step, capacity = node.step, node.capacity
    reference: dict[tuple[str, str], dict[int, float | None]] = {}
    for order, values, advance in frames:
        bucket = int(clock.monotonic() // step)
        samples: list[SampleData] = []
        for position, index in enumerate(order):
            metric, labels = _UNIVERSE[index]
            value = values[position]
            samples.append(sample(metric, value, labels or None))
            stored = None if isinstance(value, str) else float(value)
            reference.setdefault((metric, str(labels)), {})[bucket] = stored
        live.metrics(node, frame(*samples))
        clock.advance(advance)
    newest = int(clock.monotonic() // step)
    views = live.series(ref(0).id)
    assert len(views) == len(reference)
    for view in views:
        expected = reference[(view.metric, str(view.labels))]
        got = [v for _, v in view.points]
        want = [expected.get(b) for b in range(newest - capacity + 1, newest + 1)]
        assert got == [None if w is None else f32(w) for w in want]
