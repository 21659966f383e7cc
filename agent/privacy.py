"""The privacy gate (◆): the one function every outgoing message passes through.

``PrivacyGate.filter`` takes a wire message (agent.wire) and returns what may leave the node:

* metric names must be in the metric table (agent.metrics.METRICS), label names must be the ones
  that metric declares, and every label value must pass its ``LabelDef`` (pattern or choices);
* every free-text or name field is scanned for things that identify people or their devices:
  IPv4/IPv6 addresses, MAC addresses, e-mail addresses, keys (long base64/hex runs, PEM blocks),
  ``user=``/``CN=``-style account names and personal device host names. A hit refuses the value
  (the sample is dropped, the label removed, the summary withheld) and is counted and logged by
  *field name only* — the refused value itself is never logged;
* small counts that could single out one end user (metrics marked ``coarsen``) are sent as
  ``"<k"`` when below k (default 5);
* figures that follow the users' traffic (metrics marked ``user_traffic``: throughput, link
  utilisation, connection-table fill) are withheld while fewer than k peers are active — with one
  peer connected they *are* that person's bandwidth — and on tunnel interfaces, which carry only
  VPN users' traffic, also while no peer count is readable;
* counts at or above k are sent in steps of k (17 → 15 with k = 5), so that comparing two
  readings does not reveal one person connecting or leaving.

The stream client calls ``filter`` in its single send method, and the Prometheus exposition calls
``filter_samples``; a test proves no other path sends anything.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from agent.identifiers import identifier_kind
from agent.metrics import LABELS, METRICS
from agent.wire import AgentMessage, Alert, AlertEvent, Hello, Metrics, WireSample

DEFAULT_K = 5
TUNNEL_PREFIXES = ("tun", "tap", "wg", "ppp", "vpns", "ipsec", "vti", "xfrm", "gre")
_VERDICT_CACHE = 4096
WITHHELD_SUMMARY = "[summary withheld by the privacy gate]"


def default_is_tunnel(configured: Iterable[str] = ()) -> Callable[[str], bool]:
    names = frozenset(configured)

    def is_tunnel(interface: str) -> bool:
        return (
            interface in names or interface.endswith("+") or interface.startswith(TUNNEL_PREFIXES)
        )

    return is_tunnel


class PrivacyGate:
    """Filters outgoing messages. Keeps counts, never the refused values."""

    def __init__(
        self,
        *,
        k: int = DEFAULT_K,
        is_tunnel: Callable[[str], bool] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if k < 2:
            raise ValueError("k must be at least 2")
        self.k = k
        self._is_tunnel = is_tunnel or default_is_tunnel()
        self._log = logger or logging.getLogger("oneconnect.agent.privacy")
        self.refusals: Counter[str] = Counter()
        self._verdicts: dict[
            tuple[str, tuple[tuple[str, str], ...]], tuple[str, str] | tuple[()]
        ] = {}
        self.coarsened = 0
        self.withheld = 0
        self.peers_total: float | None = None
        """Active peers in the last metrics frame (None when no peer count was readable)."""

    @property
    def refusal_count(self) -> int:
        return sum(self.refusals.values())

    # -- the one entry point ---------------------------------------------------------------
    def filter(self, message: AgentMessage) -> AgentMessage | None:
        """Return the message as it may leave the node, or None if nothing of it may."""
        if isinstance(message, Metrics):
            return Metrics(
                message.seq, message.ts, self.filter_samples(message.samples, field="metrics")
            )
        if isinstance(message, Alert):
            return Alert(self._filter_event(message.event))
        if isinstance(message, Hello):
            return self._filter_hello(message)
        return message  # a Ping: a timestamp and a flag, nothing else

    # -- metrics ---------------------------------------------------------------------------
    def observe(self, samples: Sequence[WireSample]) -> None:
        """Note this cycle's active-peer count (raw, never sent) for the traffic rule. Called
        by ``filter_samples`` and by the daemon before a cycle's alerts are gated."""
        peers = [s.v for s in samples if s.m == "vpn_active_peers" and isinstance(s.v, float)]
        self.peers_total = sum(peers) if peers else None

    def filter_samples(self, samples: Sequence[WireSample], *, field: str) -> list[WireSample]:
        self.observe(samples)
        out: list[WireSample] = []
        for sample in samples:
            clean = self._filter_sample(sample, field)
            if clean is not None:
                out.append(clean)
        return out

    def _filter_sample(self, sample: WireSample, field: str) -> WireSample | None:
        definition = METRICS.get(sample.m)
        if definition is None:
            self._refuse(f"{field}.samples.m", "metric not in the allowlist")
            return None
        # Label sets repeat every cycle: judge each one once (bounded cache of verdicts).
        key = (sample.m, tuple(sample.l.items()))
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._judge_labels(sample.m, sample.l, definition.labels)
            if len(self._verdicts) >= _VERDICT_CACHE:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        if verdict:
            label, reason = verdict
            self._refuse(f"{field}.samples[{sample.m}].l{label}", reason)
            return None
        value = sample.v
        if isinstance(value, str) or not math.isfinite(value):
            self._refuse(f"{field}.samples[{sample.m}].v", "value is not a finite number")
            return None
        if definition.user_traffic and self._withhold_traffic(sample.l):
            self.withheld += 1
            return None
        if definition.coarsen:
            return WireSample(sample.m, dict(sample.l), self._coarsen(value))
        return sample

    @staticmethod
    def _judge_labels(
        metric: str, given: dict[str, str], allowed: tuple[str, ...]
    ) -> tuple[str, str] | tuple[()]:
        """``()`` when the labels may leave; else (where, reason) — never the value itself."""
        for name, value in given.items():
            if name not in allowed:
                return "", f"label not declared for {metric}"
            if not isinstance(value, str) or not LABELS[name].allows(value):
                return f".{name}", "label value outside its allowlist"
            kind = identifier_kind(value)
            if kind is not None:
                return f".{name}", kind
        return ()

    def _filter_labels(
        self, metric: str, given: dict[str, str], allowed: tuple[str, ...], where: str
    ) -> dict[str, str] | None:
        """Return clean labels, or None when the sample must be dropped as a whole."""
        verdict = self._judge_labels(metric, given, allowed)
        if verdict:
            label, reason = verdict
            self._refuse(f"{where}.l{label}", reason)
            return None
        return dict(given)

    def _withhold_traffic(self, labels: dict[str, str]) -> bool:
        """Traffic figures go out only while at least k peers share them."""
        if self.peers_total is not None:
            return self.peers_total < self.k
        interface = labels.get("interface")
        # No peer count readable: a tunnel carries only users' traffic, so it is withheld;
        # an uplink or the conntrack table also carries the node's own traffic.
        return interface is not None and self._is_tunnel(interface)

    def _coarsen(self, value: float) -> float | str:
        """Below k: "<k". At or above: in steps of k, so a difference is never one person."""
        self.coarsened += 1
        if value < self.k:
            return f"<{self.k}"
        return float(int(value // self.k) * self.k)

    # -- alerts ----------------------------------------------------------------------------
    def _filter_event(self, event: AlertEvent, where: str = "alert") -> AlertEvent:
        """An alert is never dropped (that would lose an alert); bad parts are removed."""
        definition = METRICS.get(event.metric)
        rule = event.rule
        if identifier_kind(rule) is not None:
            self._refuse(f"{where}.rule", identifier_kind(rule) or "")
            rule = "rule-" + event.fingerprint
        metric = event.metric
        labels: dict[str, str] = {}
        refused_values: list[str] = []
        if definition is None:
            self._refuse(f"{where}.metric", "metric not in the allowlist")
            metric = "unknown"
            refused_values = list(event.labels.values())
        else:
            for name, label_value in event.labels.items():
                single = self._filter_labels(metric, {name: label_value}, definition.labels, where)
                if single:
                    labels.update(single)
                else:
                    refused_values.append(label_value)
        value: float | str | None = event.value
        summary = event.summary
        kind = identifier_kind(summary)
        if kind is None and any(v and v in summary for v in refused_values):
            # The summary was rendered from a label value the gate refused.
            kind = "refused label value"
        if kind is not None:
            self._refuse(f"{where}.summary", kind)
            summary = WITHHELD_SUMMARY
        if definition is not None and isinstance(value, float):
            if definition.coarsen:
                value = self._coarsen(value)
                # The rendered summary may spell out the exact count.
                shown = value if isinstance(value, str) else f"about {value:.0f}"
                summary = f"{rule}: {metric} is {shown} (coarsened by the privacy gate)"
            elif definition.user_traffic and self._withhold_traffic(event.labels):
                self.withheld += 1
                value = None
                summary = f"{rule}: {metric} withheld while fewer than {self.k} peers share it"
        return dataclasses.replace(
            event, rule=rule, metric=metric, labels=labels, value=value, summary=summary
        )

    # -- hello -----------------------------------------------------------------------------
    def _filter_hello(self, hello: Hello) -> Hello:
        metrics = [m for m in hello.metrics if m in METRICS]
        if len(metrics) != len(hello.metrics):
            self._refuse("hello.metrics", "metric not in the allowlist")
        rules = []
        for name in hello.rules:
            kind = identifier_kind(name)
            if kind is None:
                rules.append(name)
            else:
                self._refuse("hello.rules", kind)
        # Still-firing alerts are gated like any alert event (the server only learns of them).
        firing = [self._filter_event(event, "hello.firing") for event in hello.firing]
        return dataclasses.replace(hello, metrics=metrics, rules=rules, firing=firing)

    # -- bookkeeping -----------------------------------------------------------------------
    def _refuse(self, field: str, reason: str) -> None:
        key = f"{field}: {reason}"
        if key not in self.refusals:
            # Logged once per field and reason; the value is never logged.
            self._log.warning("privacy gate refused %s (%s); counted, not sent", field, reason)
        self.refusals[key] += 1
