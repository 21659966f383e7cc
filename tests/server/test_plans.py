"""Plans are data: their limits, order and the fallback for unknown names."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from server.plans import DEFAULT_PLAN, PLAN_NAMES, PLANS, Plan, get_plan


def test_the_three_plans() -> None:
    assert PLAN_NAMES == ("free", "pro", "business")
    assert DEFAULT_PLAN == "free"
    rows = {
        p.name: (p.max_nodes, p.retention_days, p.max_webhooks, p.min_interval)
        for p in PLANS.values()
    }
    assert rows == {
        "free": (3, 0, 2, 30.0),
        "pro": (50, 30, 10, 5.0),
        "business": (1000, 90, 50, 1.0),
    }


def test_free_plan_has_no_saved_monitoring() -> None:
    assert not PLANS["free"].includes_saved_monitoring
    assert PLANS["pro"].includes_saved_monitoring
    assert PLANS["business"].includes_saved_monitoring


def test_bigger_plans_allow_more() -> None:
    ordered = [PLANS[name] for name in PLAN_NAMES]
    for small, big in itertools.pairwise(ordered):
        assert big.max_nodes > small.max_nodes
        assert big.retention_days > small.retention_days
        assert big.max_webhooks > small.max_webhooks
        assert big.min_interval < small.min_interval


def test_unknown_plan_reads_as_the_most_restrictive() -> None:
    assert get_plan("enterprise-from-the-future") is PLANS["free"]
    assert get_plan("pro") is PLANS["pro"]


def test_limits_as_shown_by_the_api() -> None:
    assert get_plan("pro").limits() == {
        "max_nodes": 50,
        "retention_days": 30,
        "max_webhooks": 10,
        "min_interval": 5.0,
        "saved_monitoring_included": True,
    }


def test_plans_are_immutable() -> None:
    plan: Plan = PLANS["free"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.max_nodes = 10_000  # type: ignore[misc]
