"""The privacy gate (◆): the one function every outgoing message passes through.

``PrivacyGate.filter`` takes a wire message (agent.protocol) and returns what may leave the node:

* metric names must be in the metric table (agent.metrics.METRICS), label names must be the ones
  that metric declares, and every label value must pass its ``LabelDef`` (pattern or choices);
* every free-text or name field is scanned for things that identify people or their devices:
  IPv4/IPv6 addresses, MAC addresses, e-mail addresses, keys (long base64/hex runs, PEM blocks),
  ``user=``/``CN=``-style account names and personal device host names. A hit refuses the value
  (the sample is dropped, the label removed, the summary withheld) and is counted and logged by
  *field name only* — the refused value itself is never logged;
* small counts that could single out one end user (metrics marked ``coarsen``) are sent as
  ``"<k"`` when below k (default 5), and whole numbers otherwise;
* tunnel-interface throughput (metrics marked ``per_tunnel_traffic``) is withheld while fewer than
  k peers are active, since with one peer connected the tunnel's traffic is that person's traffic.

The stream client calls ``filter`` in its single send method, and the Prometheus exposition calls
``filter_samples``; a test proves no other path sends anything.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from agent.metrics import LABELS, METRICS
from agent.protocol import Alert, AlertEvent, Hello, Metrics, Ping, WireSample

AgentMessage = Hello | Metrics | Alert | Ping

DEFAULT_K = 5
TUNNEL_PREFIXES = ("tun", "tap", "wg", "ppp", "vpns", "ipsec", "vti", "xfrm", "gre")
_VERDICT_CACHE = 4096
WITHHELD_SUMMARY = "[summary withheld by the privacy gate]"

_IPV4 = re.compile(r"(?<![0-9])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9])")
_V6_CANDIDATE = re.compile(r"\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%]*\]?")
_PROC_ADDR = re.compile(
    r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):[0-9A-Fa-f]{4}(?![0-9A-Fa-f])"
)
"""The hex ``address:port`` form of /proc/net/tcp and friends."""
_MAC = re.compile(
    r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f])"
    r"|(?<![0-9A-Fa-f])[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}(?![0-9A-Fa-f])"
    r"|(?<![0-9A-Fa-f])[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"
)
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
_KEY_RUN = re.compile(r"[A-Za-z0-9+/_=-]{32,}")
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{24,}(?![0-9A-Za-z])")
_PEM = re.compile(r"-----BEGIN|PRIVATE KEY")
_ACCOUNT = re.compile(
    r"(?i)\b(?:user(?:name)?|login|uid|cn|common[_ ]?name|account|email|peer|client)\s*[=:]\s*\S"
)
_DEVICE_HOST = re.compile(
    r"(?i)\b[\w-]+\.(?:local|lan|home|localdomain|internal)\b"
    r"|\b(?:DESKTOP|LAPTOP|iPhone|iPad|Galaxy|android)-[\w-]+"
)


def identifier_kind(text: str) -> str | None:
    """Name the kind of personal identifier ``text`` contains, or None if it looks clean."""
    if _IPV4.search(text):
        return "ipv4 address"
    if _PROC_ADDR.search(text):
        return "ip address (kernel hex form)"
    for candidate in _V6_CANDIDATE.findall(text):
        token = candidate.strip("[]").split("%", 1)[0]
        if token.count(":") >= 2:
            try:
                ipaddress.IPv6Address(token)
            except ValueError:
                continue
            return "ipv6 address"
    if _MAC.search(text):
        return "mac address"
    if _EMAIL.search(text):
        return "e-mail address"
    if (
        _PEM.search(text)
        or _HEX_RUN.search(text)
        or any(_looks_random(run) for run in _KEY_RUN.findall(text))
    ):
        return "key"
    if _ACCOUNT.search(text):
        return "account name"
    if _DEVICE_HOST.search(text):
        return "device host name"
    return None


def _looks_random(run: str) -> bool:
    """A long base64-alphabet run with digits and both cases: a key, not a snake_case name."""
    return (
        any(c.isdigit() for c in run)
        and any(c.isupper() for c in run)
        and any(c.islower() for c in run)
    )


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
            return Metrics.model_construct(
                v=message.v,
                type="metrics",
                seq=message.seq,
                ts=message.ts,
                samples=self.filter_samples(message.samples, field="metrics"),
            )
        if isinstance(message, Alert):
            return Alert.model_construct(
                v=message.v, type="alert", event=self._filter_event(message.event)
            )
        if isinstance(message, Hello):
            return self._filter_hello(message)
        return message  # a Ping: a timestamp and a flag, nothing else

    # -- metrics ---------------------------------------------------------------------------
    def filter_samples(self, samples: Sequence[WireSample], *, field: str) -> list[WireSample]:
        peers = [s.v for s in samples if s.m == "vpn_active_peers" and isinstance(s.v, float)]
        self.peers_total = sum(peers) if peers else None
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
        if definition.per_tunnel_traffic and self._few_peers(sample.l):
            self.withheld += 1
            return None
        if definition.coarsen:
            return WireSample.model_construct(m=sample.m, l=dict(sample.l), v=self._coarsen(value))
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

    def _few_peers(self, labels: dict[str, str]) -> bool:
        interface = labels.get("interface")
        if interface is None or not self._is_tunnel(interface):
            return False
        return self.peers_total is not None and self.peers_total < self.k

    def _coarsen(self, value: float) -> float | str:
        if value < self.k:
            self.coarsened += 1
            return f"<{self.k}"
        return float(round(value))

    # -- alerts ----------------------------------------------------------------------------
    def _filter_event(self, event: AlertEvent) -> AlertEvent:
        """An alert is never dropped (that would lose an alert); bad parts are removed."""
        where = "alert"
        definition = METRICS.get(event.metric)
        rule = event.rule
        if identifier_kind(rule) is not None:
            self._refuse(f"{where}.rule", identifier_kind(rule) or "")
            rule = "rule-" + event.fingerprint
        metric = event.metric
        labels: dict[str, str] = {}
        if definition is None:
            self._refuse(f"{where}.metric", "metric not in the allowlist")
            metric = "unknown"
        else:
            for name, label_value in event.labels.items():
                single = self._filter_labels(metric, {name: label_value}, definition.labels, where)
                if single:
                    labels.update(single)
        value: float | str | None = event.value
        summary = event.summary
        kind = identifier_kind(summary)
        if kind is not None:
            self._refuse(f"{where}.summary", kind)
            summary = WITHHELD_SUMMARY
        if definition is not None and isinstance(value, float):
            if definition.coarsen:
                coarse = self._coarsen(value)
                value = coarse
                if isinstance(coarse, str):
                    # The rendered summary may spell out the exact small count.
                    summary = f"{rule}: {metric} is {value} (coarsened by the privacy gate)"
            elif definition.per_tunnel_traffic and self._few_peers(labels):
                self.withheld += 1
                value = None
                summary = f"{rule}: tunnel traffic withheld while fewer than {self.k} peers"
        return AlertEvent.model_construct(
            **{
                **{name: getattr(event, name) for name in AlertEvent.model_fields},
                "rule": rule,
                "metric": metric,
                "labels": labels,
                "value": value,
                "summary": summary,
            }
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
        return Hello.model_construct(
            v=hello.v,
            type="hello",
            agent_version=hello.agent_version,
            interval=hello.interval,
            metrics=metrics,
            rules=rules,
            buffer_seconds=hello.buffer_seconds,
        )

    # -- bookkeeping -----------------------------------------------------------------------
    def _refuse(self, field: str, reason: str) -> None:
        key = f"{field}: {reason}"
        if key not in self.refusals:
            # Logged once per field and reason; the value is never logged.
            self._log.warning("privacy gate refused %s (%s); counted, not sent", field, reason)
        self.refusals[key] += 1
