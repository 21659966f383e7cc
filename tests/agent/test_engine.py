"""The rule engine state machine, driven with a fake clock (``now`` passed explicitly)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, strategies as st

from agent import protocol
from agent.engine import RuleEngine, fingerprint
from agent.rules import RuleSet, default_rules, rules_from_dicts
from agent.samples import Sample, SeriesKey, labels
from agent.wire import Alert, AlertEvent, encode


class Ids:
    """Deterministic event ids."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"evt{self.n:05d}"


def rules(*items: dict[str, Any]) -> RuleSet:
    return rules_from_dicts(list(items), source="test", include_defaults=False)


def rule(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "r", "metric": "cpu_usage_percent", "op": ">", "threshold": 90}
    return {**base, **fields}


def engine(*items: dict[str, Any], **kwargs: Any) -> RuleEngine:
    return RuleEngine(rules(*items), new_id=Ids(), **kwargs)


def cpu(value: float) -> list[Sample]:
    return [Sample("cpu_usage_percent", value)]


def disk(mount: str, value: float) -> Sample:
    return Sample("disk_used_percent", value, labels(mount=mount))


def run(e: RuleEngine, values: Sequence[float | None], step: float = 5.0) -> list[str]:
    """Feed one cpu value per cycle (None = no sample); return "" or the event status per cycle."""
    out = []
    for i, value in enumerate(values):
        events = e.evaluate(i * step, [] if value is None else cpu(value))
        out.append(",".join(ev.status for ev in events))
    return out


# --- operators -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "fires"),
    [
        (">", 91, True),
        (">", 90, False),
        (">=", 90, True),
        (">=", 89.9, False),
        ("<", 89, True),
        ("<", 90, False),
        ("<=", 90, True),
        ("<=", 90.1, False),
        ("==", 90, True),
        ("==", 90.5, False),
        ("!=", 91, True),
        ("!=", 90, False),
    ],
)
def test_every_op(op: str, value: float, fires: bool) -> None:
    e = engine(rule(op=op))
    events = e.evaluate(0, cpu(value))
    assert [ev.status for ev in events] == (["firing"] if fires else [])


# --- for / pending -------------------------------------------------------------------------------


def test_for_pending_then_firing() -> None:
    e = engine(rule(**{"for": "15s"}))
    assert run(e, [95, 95, 95, 95, 95]) == ["", "", "", "firing", ""]


def test_pending_that_turns_false_goes_back_to_inactive() -> None:
    e = engine(rule(**{"for": "15s"}))
    # true at 0, 5, 10; false at 15 (no event); the timer restarts at 20 and fires at 35.
    assert run(e, [95, 95, 95, 50, 95, 95, 95, 95]) == ["", "", "", "", "", "", "", "firing"]
    assert e.firing()[0].started_at == 35


def test_pending_series_that_disappears_is_dropped() -> None:
    e = engine(rule(**{"for": "10s"}))
    assert run(e, [95, None, 95, 95, 95]) == ["", "", "", "", "firing"]


# --- hysteresis and keep_firing_for --------------------------------------------------------------


def test_clear_hysteresis_does_not_flap() -> None:
    e = engine(rule(clear=85))
    values = [91, 87, 92, 86, 89, 91, 85.5, 85, 87, 89, 91]
    assert run(e, values) == ["firing", "", "", "", "", "", "", "resolved", "", "", "firing"]


def test_without_clear_resolves_at_threshold() -> None:
    e = engine(rule())
    assert run(e, [91, 90, 91, 89]) == ["firing", "resolved", "firing", "resolved"]


@pytest.mark.parametrize(
    ("op", "threshold", "clear", "values", "expected"),
    [
        ("<", 5, 10, [4, 9, 6, 10, 4], ["firing", "", "", "resolved", "firing"]),
        ("<=", 5, 10, [5, 10, 10.5], ["firing", "", "resolved"]),
        (">=", 90, 85, [90, 85, 84.9], ["firing", "", "resolved"]),
    ],
)
def test_clear_for_other_ops(
    op: str, threshold: float, clear: float, values: list[float], expected: list[str]
) -> None:
    e = engine(rule(op=op, threshold=threshold, clear=clear))
    assert run(e, values) == expected


def test_keep_firing_for() -> None:
    e = engine(rule(keep_firing_for="10s"))
    # false from t=5; still firing at 10; resolves at 15 (10 s after it became false).
    assert run(e, [95, 50, 50, 50, 50]) == ["firing", "", "", "resolved", ""]


def test_keep_firing_for_resets_when_condition_returns() -> None:
    e = engine(rule(keep_firing_for="10s"))
    assert run(e, [95, 50, 50, 95, 50, 50, 50]) == ["firing", "", "", "", "", "", "resolved"]


def test_keep_firing_for_with_clear() -> None:
    e = engine(rule(clear=80, keep_firing_for="5s"))
    assert run(e, [95, 85, 79, 85, 79, 79]) == ["firing", "", "", "", "", "resolved"]


# --- series that disappear -----------------------------------------------------------------------


def test_firing_series_that_disappears_resolves_after_two_intervals() -> None:
    e = engine(rule())
    # interval 5: last seen at 5, resolves at 15 (unseen for 2 intervals).
    assert run(e, [95, 95, None, None, None]) == ["firing", "", "", "resolved", ""]
    assert [ev.status for ev in e.evaluate(100, cpu(95))] == ["firing"]


def test_disappeared_series_resolved_event_has_no_value() -> None:
    e = engine(rule())
    e.evaluate(0, cpu(95))
    e.evaluate(5, cpu(96))
    assert e.evaluate(10, []) == []
    (ev,) = e.evaluate(15, [])
    assert (ev.status, ev.value, ev.ended_at, ev.started_at) == ("resolved", None, 15, 0)
    assert ev.summary == "cpu_usage_percent is n/a (> 90)"


def test_series_that_returns_in_time_keeps_firing() -> None:
    e = engine(rule())
    assert run(e, [95, 95, None, 95, None, 95]) == ["firing", "", "", "", "", ""]


def test_disappearing_series_waits_for_keep_firing_for() -> None:
    e = engine(rule(keep_firing_for="30s"))
    assert run(e, [95, 95, None, None, None, None, None, None, None]) == [
        "firing",
        "",
        "",
        "",
        "",
        "",
        "",
        "resolved",  # t=35: unseen since t=5 for 30 s
        "",
    ]


def test_non_finite_value_counts_as_missing() -> None:
    e = engine(rule())
    assert run(e, [95, float("nan"), float("inf"), float("nan")]) == ["firing", "", "resolved", ""]


# --- labels, fingerprints and ids ----------------------------------------------------------------


def test_one_alert_per_series_and_label_filter() -> None:
    e = engine(
        {"name": "any_disk", "metric": "disk_used_percent", "op": ">", "threshold": 90},
        {
            "name": "root_disk",
            "metric": "disk_used_percent",
            "labels": {"mount": "/"},
            "op": ">",
            "threshold": 90,
            "summary": "Disk {labels.mount} is {value:.0f}% full",
        },
    )
    events = e.evaluate(0, [disk("/", 95), disk("/var", 96), disk("/srv", 10)])
    assert [(ev.rule, ev.labels) for ev in events] == [
        ("any_disk", {"mount": "/"}),
        ("any_disk", {"mount": "/var"}),
        ("root_disk", {"mount": "/"}),
    ]
    assert events[2].summary == "Disk / is 95% full"
    assert len({ev.fingerprint for ev in events}) == 3
    events = e.evaluate(5, [disk("/", 95), disk("/var", 50), disk("/srv", 10)])
    assert [(ev.rule, ev.status, ev.labels) for ev in events] == [
        ("any_disk", "resolved", {"mount": "/var"})
    ]


def test_fingerprint_stable_and_shared_by_firing_and_resolved() -> None:
    e = engine(rule(name="disk", metric="disk_used_percent"))
    (firing,) = e.evaluate(0, [disk("/", 95)])
    (resolved,) = e.evaluate(5, [disk("/", 50)])
    assert firing.fingerprint == resolved.fingerprint
    blob = json.dumps(["disk", [["mount", "/"]]], separators=(",", ":"))
    assert firing.fingerprint == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert firing.fingerprint == fingerprint("disk", labels(mount="/"))
    assert fingerprint("disk", labels(mount="/var")) != firing.fingerprint
    assert fingerprint("disk2", labels(mount="/")) != firing.fingerprint
    # A fresh engine (a restart) computes the same fingerprint.
    (again,) = engine(rule(name="disk", metric="disk_used_percent")).evaluate(0, [disk("/", 95)])
    assert again.fingerprint == firing.fingerprint


def test_ids_unique_per_transition_with_default_id_factory() -> None:
    e = RuleEngine(rules(rule()))
    ids = []
    for i, value in enumerate([95, 50] * 10):
        ids += [ev.id for ev in e.evaluate(i, cpu(value))]
    assert len(ids) == 20
    assert len(set(ids)) == 20
    assert all(len(i) == 32 for i in ids)


def test_event_fields() -> None:
    e = engine(
        rule(
            clear=80,
            severity="critical",
            **{"for": "5s"},
            summary="{rule}/{metric}/{severity}: {value:.1f} > {threshold} (clears {clear})",
        )
    )
    assert e.evaluate(100, cpu(91.23)) == []
    (firing,) = e.evaluate(105, cpu(92.34))
    assert firing.as_dict() == {
        "id": "evt00001",
        "fingerprint": fingerprint("r", ()),
        "rule": "r",
        "status": "firing",
        "severity": "critical",
        "metric": "cpu_usage_percent",
        "labels": {},
        "value": 92.34,
        "threshold": 90.0,
        "summary": "r/cpu_usage_percent/critical: 92.3 > 90 (clears 80)",
        "started_at": 105.0,
        "ended_at": None,
        "ts": 105.0,
    }
    assert e.firing() == [firing]
    (resolved,) = e.evaluate(110, cpu(70))
    assert (resolved.id, resolved.status, resolved.value) == ("evt00002", "resolved", 70.0)
    assert (resolved.started_at, resolved.ended_at, resolved.ts) == (105.0, 110.0, 110.0)
    assert e.firing() == []
    # Events survive the wire unchanged.
    for ev in (firing, resolved):
        message = protocol.parse_agent_message(encode(Alert(ev)))
        assert isinstance(message, protocol.Alert)
        assert message.event.model_dump() == ev.as_dict()


def test_unsendable_labels_are_ignored() -> None:
    e = engine(rule(name="disk", metric="disk_used_percent"))
    bad = Sample("disk_used_percent", 99, labels(mount="/" + "x" * 200))
    assert e.evaluate(0, [bad, disk("/", 95)])[0].labels == {"mount": "/"}


# --- absent rules --------------------------------------------------------------------------------

ABSENT = {"name": "conntrack_absent", "metric": "conntrack_used_percent", "absent_for": "20s"}


def conntrack(value: float = 50) -> list[Sample]:
    return [Sample("conntrack_used_percent", value)]


def test_absent_fires_after_absent_for_since_start_and_resolves() -> None:
    e = engine({**ABSENT, "severity": "info"})
    steps = [e.evaluate(t, []) for t in (0, 10, 19)]
    assert steps == [[], [], []]
    (firing,) = e.evaluate(20, [])
    assert (firing.status, firing.value, firing.threshold, firing.labels) == (
        "firing",
        None,
        None,
        {},
    )
    assert firing.summary == "No conntrack_used_percent data for 20s"
    assert firing.severity == "info"
    assert e.evaluate(25, []) == []
    assert e.firing() == [firing]
    (resolved,) = e.evaluate(30, conntrack())
    assert (resolved.status, resolved.started_at, resolved.ended_at) == ("resolved", 20, 30)
    assert resolved.fingerprint == firing.fingerprint
    assert resolved.id != firing.id


def test_absent_counts_from_last_seen() -> None:
    e = engine(ABSENT)
    assert e.evaluate(0, conntrack()) == []
    assert e.evaluate(100, conntrack()) == []
    assert e.evaluate(115, []) == []
    assert [ev.status for ev in e.evaluate(120, [])] == ["firing"]


def test_absent_with_labels_only_counts_matching_series() -> None:
    e = engine(
        {"name": "wg0_absent", "metric": "net_up", "labels": {"interface": "wg0"}, "absent_for": 10}
    )
    eth0 = [Sample("net_up", 1, labels(interface="eth0"))]
    assert e.evaluate(0, eth0) == []
    (firing,) = e.evaluate(10, eth0)
    assert firing.labels == {"interface": "wg0"}
    assert firing.fingerprint == fingerprint("wg0_absent", labels(interface="wg0"))
    (resolved,) = e.evaluate(15, [Sample("net_up", 0, labels(interface="wg0"))])
    assert resolved.status == "resolved"


def test_absent_rule_ignores_non_finite_samples() -> None:
    e = engine(ABSENT)
    assert e.evaluate(0, conntrack(float("nan"))) == []
    assert [ev.status for ev in e.evaluate(20, conntrack(float("nan")))] == ["firing"]


# --- reduce --------------------------------------------------------------------------------------


class FakeHistory:
    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.calls: list[tuple[SeriesKey, float, float]] = []

    def __call__(self, series: SeriesKey, since: float, now: float) -> Sequence[float]:
        self.calls.append((series, since, now))
        return self.values


@pytest.mark.parametrize(
    ("reduce", "history", "current", "value", "fires"),
    [
        ("avg", [80, 100, 99], 50, 93.0, True),
        ("avg", [95, 85, 88], 95, 89.33333333333333, False),
        ("max", [50, 95, 60], 50, 95.0, True),
        ("min", [91, 95, 92], 99, 91.0, True),
        ("min", [91, 89, 92], 99, 89.0, False),
        ("avg", [], 95, 95.0, True),
        ("avg", [float("nan"), 100.0], 50, 100.0, True),
    ],
)
def test_reduce(
    reduce: str, history: list[float], current: float, value: float, fires: bool
) -> None:
    fake = FakeHistory(history)
    e = engine(rule(reduce=reduce, window="1m"), history=fake)
    events = e.evaluate(1000, cpu(current))
    assert fake.calls == [(SeriesKey("cpu_usage_percent", ()), 940, 1000)]
    assert [ev.value for ev in events] == ([value] if fires else [])
    if not fires:
        events = e.evaluate(1005, cpu(current))
        assert events == []


def test_reduce_without_history_uses_current_value() -> None:
    e = engine(rule(reduce="max", window="1m"))
    assert [ev.value for ev in e.evaluate(0, cpu(95))] == [95]


# --- replace_rules -------------------------------------------------------------------------------


def test_replace_rules_keeps_state_of_unchanged_rules() -> None:
    pending = rule(name="pending", **{"for": "10s"})
    firing = rule(name="firing")
    e = engine(pending, firing)
    assert [ev.rule for ev in e.evaluate(0, cpu(95))] == ["firing"]
    e.replace_rules(rules(pending, firing, rule(name="new")))
    assert [ev.rule for ev in e.evaluate(5, cpu(95))] == ["new"]
    assert [ev.rule for ev in e.evaluate(10, cpu(95))] == ["pending"]
    assert sorted(ev.rule for ev in e.firing()) == ["firing", "new", "pending"]


def test_replace_rules_resolves_removed_and_changed_rules() -> None:
    e = engine(rule(name="changed"), rule(name="removed"), rule(name="kept"))
    fired = {ev.rule: ev for ev in e.evaluate(0, cpu(95))}
    assert set(fired) == {"changed", "removed", "kept"}
    e.replace_rules(rules(rule(name="changed", threshold=80), rule(name="kept")))
    # Until the next evaluate, they are still firing (their resolved events are not out yet).
    assert len(e.firing()) == 3
    events = e.evaluate(5, cpu(95))
    assert [(ev.rule, ev.status) for ev in events] == [
        ("changed", "resolved"),
        ("removed", "resolved"),
        ("changed", "firing"),
    ]
    assert events[0].fingerprint == fired["changed"].fingerprint == events[2].fingerprint
    assert events[0].value is None
    assert events[0].started_at == 0
    assert events[2].threshold == 80
    assert events[2].started_at == 5
    assert sorted(ev.rule for ev in e.firing()) == ["changed", "kept"]
    assert e.evaluate(10, cpu(95)) == []


def test_replace_rules_with_same_definition_from_another_source_keeps_state() -> None:
    e = RuleEngine(rules(rule()), new_id=Ids())
    e.evaluate(0, cpu(95))
    e.replace_rules(rules_from_dicts([rule()], source="pushed", include_defaults=False))
    assert e.evaluate(5, cpu(95)) == []
    assert e.rules.rules[0].source == "pushed"


def test_replace_rules_absent_rule_restarts_its_clock() -> None:
    e = engine(rule())
    e.evaluate(0, cpu(50))
    e.replace_rules(rules(rule(), ABSENT))
    assert e.evaluate(100, cpu(50)) == []
    assert e.evaluate(115, cpu(50)) == []
    assert [ev.rule for ev in e.evaluate(120, cpu(50))] == ["conntrack_absent"]


# --- properties and cost -------------------------------------------------------------------------


@given(
    st.lists(st.one_of(st.none(), st.floats(0, 100)), max_size=60),
    st.sampled_from([0, 5, 12]),
    st.sampled_from([0, 7]),
)
def test_events_alternate_firing_and_resolved(
    values: list[float | None], for_seconds: int, keep: int
) -> None:
    e = engine(rule(clear=80, keep_firing_for=keep, **{"for": for_seconds}))
    statuses: list[str] = []
    events: list[AlertEvent] = []
    for i, value in enumerate(values):
        batch = e.evaluate(i * 5.0, [] if value is None else cpu(value))
        events += batch
        statuses += [ev.status for ev in batch]
    assert statuses == ["firing", "resolved"] * (len(statuses) // 2) + ["firing"] * (
        len(statuses) % 2
    )
    assert len({ev.id for ev in events}) == len(events)
    assert len({ev.fingerprint for ev in events}) <= 1
    assert len(e.firing()) == len(statuses) % 2


def test_evaluation_is_cheap() -> None:
    ruleset = default_rules()
    samples = [Sample("disk_used_percent", 50, labels(mount=f"/m{i}")) for i in range(30)]
    samples += [Sample("net_up", 1, labels(interface=f"if{i}")) for i in range(30)]
    samples += [Sample("vpn_process_up", 1, labels(process=f"p{i}")) for i in range(10)]
    samples += [Sample("cert_days_left", 30, labels(cert=f"c{i}")) for i in range(10)]
    samples += [Sample(r.metric, 0.5, r.labels) for r in ruleset]
    samples += [Sample("load1", 0.5) for _ in range(150 - len(samples))]
    assert len(samples) == 150
    e = RuleEngine(ruleset)
    rounds = 500
    start = time.perf_counter()
    for i in range(rounds):
        e.evaluate(float(i), samples)
    per_cycle = (time.perf_counter() - start) / rounds
    # The target is well under 0.5 ms; the bound here leaves room for slow CI machines.
    assert per_cycle < 0.002
