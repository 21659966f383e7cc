"""The rule engine: samples in, alert events out, once per collection cycle.

Threshold rules, per (rule, series)::

    inactive --condition true, for > 0--> pending --held for `for`--> firing --cleared--> resolved
        \\--condition true, for = 0------------------------------------^

* The condition is ``value <op> threshold``. While firing, the alert stays up as long as
  ``value <op> clear`` (``clear`` defaults to the threshold), so a value oscillating between clear
  and threshold does not flap. Once that fails, it resolves after ``keep_firing_for`` more seconds
  of failing (at once when 0). A pending alert whose condition turns false goes back to inactive
  silently.
* A series with no sample in a cycle: a pending alert is dropped; a firing one holds until the
  series has been unseen for ``max(keep_firing_for, 2 × the last evaluation interval)``, then
  resolves with value None. Non-finite sample values count as no sample.
* ``reduce`` rules take avg/min/max of ``history(series, now - window, now)`` (expected to include
  this cycle's sample); without a history callback, or when it returns nothing, the current value.

Absent rules fire when no sample of the metric matching the rule's labels has been seen for
``absent_for`` since ``max(last seen, first evaluation with this rule)``, and resolve when one
arrives. Their alert carries the rule's label matchers as labels.

Every transition is one new ``AlertEvent`` with a fresh id; the fingerprint (rule + labels) is the
same for an alert's firing and resolved events and across restarts. ``started_at`` is when the
alert started firing.

``replace_rules`` keeps the state of every rule whose definition is unchanged. A firing alert whose
rule was removed or changed is resolved (value None) at the next ``evaluate``, before that cycle's
other events; a changed rule then starts afresh and may fire again under the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import operator
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from agent.rules import Rule, RuleSet
from agent.samples import Labels, Sample, SeriesKey
from agent.templates import TemplateValue
from agent.wire import AlertEvent, AlertStatus

log = logging.getLogger("oneconnect." + __name__)

History = Callable[[SeriesKey, float, float], Sequence[float]]
"""history(series, since, now) -> the series' values with timestamps in [since, now]."""

_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_REDUCERS: Final[dict[str, Callable[[Sequence[float]], float]]] = {
    "avg": lambda values: math.fsum(values) / len(values),
    "min": min,
    "max": max,
}
_WIRE_NAME = re.compile(r"[A-Za-z0-9_.:+/-]{1,64}")
_MAX_WIRE_LABELS = 8
_MAX_WIRE_LABEL_VALUE = 128


def _new_id() -> str:
    return uuid.uuid4().hex


def fingerprint(rule: str, labels: Labels) -> str:
    """First 16 hex digits of sha256 over the rule name and the sorted labels."""
    blob = json.dumps([rule, sorted(labels)], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _fits_wire(labels: Labels) -> bool:
    """Whether labels can go into an AlertEvent (collectors should never produce others)."""
    return len(labels) <= _MAX_WIRE_LABELS and all(
        _WIRE_NAME.fullmatch(k) and 1 <= len(v) <= _MAX_WIRE_LABEL_VALUE for k, v in labels
    )


@dataclass(slots=True)
class _Alert:
    """A pending or firing alert of one series (an absent rule has at most one)."""

    labels: Labels
    fingerprint: str
    firing: bool
    active_since: float
    last_seen: float
    value: float | None
    false_since: float | None = None
    event: AlertEvent | None = None
    """The firing event, once firing."""


class _Compiled:
    """A rule with its comparison functions looked up once and its alerts."""

    __slots__ = ("alerts", "cmp", "last_seen", "match", "rule", "since")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.cmp = _COMPARE[rule.op] if rule.op is not None else operator.gt
        self.match = rule.labels
        self.alerts: dict[Labels, _Alert] = {}
        # Absent rules: first evaluation with this rule and last time a matching sample was seen.
        self.since: float | None = None
        self.last_seen: float | None = None

    def matches(self, sample: Sample) -> bool:
        return all(pair in sample.labels for pair in self.match)


class RuleEngine:
    def __init__(
        self,
        rules: RuleSet,
        *,
        new_id: Callable[[], str] = _new_id,
        history: History | None = None,
    ) -> None:
        self._new_id = new_id
        self._history = history
        self._rules = RuleSet()
        self._compiled: list[_Compiled] = []
        self._orphans: list[tuple[Rule, _Alert]] = []
        self._last_now: float | None = None
        self._interval = 0.0
        self._warned: set[str] = set()
        self.replace_rules(rules)

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def replace_rules(self, rules: RuleSet) -> None:
        """Swap the rule set (SIGHUP, pushed config). Unchanged rules keep their state; firing
        alerts of removed or changed rules resolve at the next evaluate."""
        old = {c.rule.name: c for c in self._compiled}
        compiled: list[_Compiled] = []
        for rule in rules.rules:
            prev = old.pop(rule.name, None)
            if prev is not None and prev.rule == rule:
                compiled.append(prev)
                continue
            if prev is not None:
                self._orphan(prev)
            compiled.append(_Compiled(rule))
        for prev in old.values():
            self._orphan(prev)
        self._compiled = compiled
        self._rules = rules

    def _orphan(self, compiled: _Compiled) -> None:
        self._orphans.extend((compiled.rule, a) for a in compiled.alerts.values() if a.firing)

    def firing(self) -> list[AlertEvent]:
        """The firing event of every alert that has not been resolved yet."""
        events = [a.event for _, a in self._orphans if a.event is not None]
        for c in self._compiled:
            events.extend(a.event for a in c.alerts.values() if a.event is not None)
        return events

    def evaluate(self, now: float, samples: Sequence[Sample]) -> list[AlertEvent]:
        """Advance every rule to ``now`` given this cycle's samples; returns the transitions."""
        if self._last_now is not None and now > self._last_now:
            self._interval = now - self._last_now
        self._last_now = now
        index: dict[str, list[Sample]] = {}
        for sample in samples:
            if not math.isfinite(sample.value):
                continue
            same = index.get(sample.metric)
            if same is None:
                index[sample.metric] = [sample]
            else:
                same.append(sample)
        events: list[AlertEvent] = []
        if self._orphans:
            for rule, alert in self._orphans:
                events.append(self._resolve(rule, alert, None, now))
            self._orphans = []
        for c in self._compiled:
            if c.rule.absent_for is not None:
                self._absent(c, c.rule.absent_for, now, index.get(c.rule.metric, ()), events)
            else:
                self._threshold(c, now, index.get(c.rule.metric, ()), events)
        return events

    # --- threshold rules --------------------------------------------------------------------

    def _threshold(
        self, c: _Compiled, now: float, samples: Sequence[Sample], events: list[AlertEvent]
    ) -> None:
        rule = c.rule
        assert rule.threshold is not None
        threshold = rule.threshold
        clear = rule.clear if rule.clear is not None else threshold
        cmp = c.cmp
        alerts = c.alerts
        for sample in samples:
            if c.match and not c.matches(sample):
                continue
            value = sample.value if rule.reduce == "last" else self._reduce(rule, sample, now)
            alert = alerts.get(sample.labels)
            if alert is None:
                if not cmp(value, threshold) or not self._fits(rule, sample.labels):
                    continue
                alert = _Alert(
                    sample.labels, fingerprint(rule.name, sample.labels), False, now, now, value
                )
                alerts[sample.labels] = alert
                if rule.for_seconds <= 0:
                    self._fire(rule, alert, now, events)
                continue
            alert.last_seen = now
            alert.value = value
            if not alert.firing:
                if not cmp(value, threshold):
                    del alerts[sample.labels]
                elif now - alert.active_since >= rule.for_seconds:
                    self._fire(rule, alert, now, events)
            elif cmp(value, clear):
                alert.false_since = None
            else:
                if alert.false_since is None:
                    alert.false_since = now
                if now - alert.false_since >= rule.keep_firing_for:
                    events.append(self._resolve(rule, alert, value, now))
                    del alerts[sample.labels]
        if alerts:
            self._missing(c, now, events)

    def _missing(self, c: _Compiled, now: float, events: list[AlertEvent]) -> None:
        grace = max(c.rule.keep_firing_for, 2 * self._interval)
        for labels, alert in list(c.alerts.items()):
            if alert.last_seen == now:
                continue
            if not alert.firing:
                del c.alerts[labels]
            elif now - alert.last_seen >= grace:
                events.append(self._resolve(c.rule, alert, None, now))
                del c.alerts[labels]

    def _reduce(self, rule: Rule, sample: Sample, now: float) -> float:
        if self._history is None:
            return sample.value
        values = self._history(sample.series, now - rule.window, now)
        if values:
            result = _REDUCERS[rule.reduce](values)
            if math.isfinite(result):
                return result
            # Rare: a non-finite value in the history; reduce over the finite ones.
            values = [v for v in values if math.isfinite(v)]
            if values:
                return _REDUCERS[rule.reduce](values)
        return sample.value

    def _fits(self, rule: Rule, labels: Labels) -> bool:
        if _fits_wire(labels):
            return True
        if rule.name not in self._warned:
            self._warned.add(rule.name)
            log.warning("rule %s: ignoring a series whose labels cannot be sent", rule.name)
        return False

    # --- absent rules -----------------------------------------------------------------------

    def _absent(
        self,
        c: _Compiled,
        absent_for: float,
        now: float,
        samples: Sequence[Sample],
        events: list[AlertEvent],
    ) -> None:
        if c.since is None:
            c.since = now
        seen = any(c.matches(s) for s in samples) if c.match else bool(samples)
        alert = c.alerts.get(c.rule.labels)
        if seen:
            c.last_seen = now
            if alert is not None:
                events.append(self._resolve(c.rule, alert, None, now))
                del c.alerts[c.rule.labels]
            return
        reference = max(c.since, c.last_seen) if c.last_seen is not None else c.since
        if alert is None and now - reference >= absent_for:
            alert = _Alert(
                c.rule.labels, fingerprint(c.rule.name, c.rule.labels), False, now, now, None
            )
            c.alerts[c.rule.labels] = alert
            self._fire(c.rule, alert, now, events)

    # --- events -----------------------------------------------------------------------------

    def _fire(self, rule: Rule, alert: _Alert, now: float, events: list[AlertEvent]) -> None:
        alert.firing = True
        alert.false_since = None
        alert.event = self._event(rule, alert, "firing", alert.value, now, now)
        events.append(alert.event)

    def _resolve(self, rule: Rule, alert: _Alert, value: float | None, now: float) -> AlertEvent:
        assert alert.event is not None
        alert.firing = False
        started = alert.event.started_at
        alert.event = None
        return self._event(rule, alert, "resolved", value, started, now)

    def _event(
        self,
        rule: Rule,
        alert: _Alert,
        status: AlertStatus,
        value: float | None,
        started_at: float,
        now: float,
    ) -> AlertEvent:
        labels = dict(alert.labels)
        fields: dict[str, TemplateValue] = {
            "value": value,
            "threshold": rule.threshold,
            "clear": rule.clear_level,
            "rule": rule.name,
            "metric": rule.metric,
            "severity": rule.severity,
        }
        return AlertEvent(
            id=self._new_id(),
            fingerprint=alert.fingerprint,
            rule=rule.name,
            status=status,
            severity=rule.severity,
            metric=rule.metric,
            labels=labels,
            value=value,
            threshold=rule.threshold,
            summary=rule.summary.render(fields, labels),
            started_at=started_at,
            ended_at=now if status == "resolved" else None,
            ts=now,
        )


__all__ = ["History", "RuleEngine", "fingerprint"]
