"""Plans as data: one table of what each plan allows, read everywhere limits are enforced.

=========  =========  ==============  ============  ============
plan       max_nodes  retention_days  max_webhooks  min_interval
=========  =========  ==============  ============  ============
free               3         0 (off)             2          30 s
pro               50              30            10           5 s
business        1000              90            50           1 s
=========  =========  ==============  ============  ============

Choices: ``retention_days`` is how long *saved monitoring* (issue 5, opt-in only) keeps data;
0 means the plan does not include saved monitoring at all, so a free account can never have a
monitored-data row. ``min_interval`` is the shortest agent interval the server accepts for the
plan's nodes (an agent asking for less is told, by a ``config`` message, to use this). Limits are
upper bounds: creating a node past ``max_nodes`` is 403; changing to a plan whose limits the
account already exceeds is 409. Plan changes are free-form for now (no billing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    max_nodes: int
    retention_days: int
    """Days saved monitoring keeps data; 0 = saved monitoring not included."""
    max_webhooks: int
    min_interval: float
    """Seconds: the shortest agent interval allowed for this plan's nodes."""

    @property
    def includes_saved_monitoring(self) -> bool:
        return self.retention_days > 0

    def limits(self) -> dict[str, Any]:
        """The plan's limits as the API shows them."""
        return {
            "max_nodes": self.max_nodes,
            "retention_days": self.retention_days,
            "max_webhooks": self.max_webhooks,
            "min_interval": self.min_interval,
            "saved_monitoring_included": self.includes_saved_monitoring,
        }


PLANS: Final[dict[str, Plan]] = {
    p.name: p
    for p in (
        Plan("free", max_nodes=3, retention_days=0, max_webhooks=2, min_interval=30.0),
        Plan("pro", max_nodes=50, retention_days=30, max_webhooks=10, min_interval=5.0),
        Plan("business", max_nodes=1000, retention_days=90, max_webhooks=50, min_interval=1.0),
    )
}
DEFAULT_PLAN: Final = "free"
PLAN_NAMES: Final = tuple(PLANS)


def get_plan(name: str) -> Plan:
    """The plan called ``name``; an unknown name (a row from a newer release) reads as free,
    the most restrictive plan, rather than failing."""
    return PLANS.get(name, PLANS[DEFAULT_PLAN])
