"""The privacy gate: allowlists, identifier refusal, coarsening — and properties over generated
identifiers proving none of them ever appears in an outgoing message."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent.identifiers import identifier_kind
from agent.privacy import WITHHELD_SUMMARY, PrivacyGate
from agent.wire import Alert, AlertEvent, Hello, Metrics, Ping, WireSample, encode


def frame(*samples: WireSample) -> Metrics:
    return Metrics(1, 1.0, list(samples))


def sample(m: str, v: float | str, **labels: str) -> WireSample:
    return WireSample(m, labels, v)


def event(**overrides: object) -> AlertEvent:
    fields: dict[str, Any] = {
        "id": "e" * 32,
        "fingerprint": "0123456789abcdef",
        "rule": "disk_full",
        "status": "firing",
        "severity": "warning",
        "metric": "disk_used_percent",
        "labels": {"mount": "/"},
        "value": 95.0,
        "threshold": 90.0,
        "summary": "Disk / is 95% full",
        "started_at": 1.0,
        "ended_at": None,
        "ts": 1.0,
    }
    fields.update(overrides)
    return AlertEvent(**fields)


def gated_frame(gate: PrivacyGate, *samples: WireSample) -> list[WireSample]:
    out = gate.filter(frame(*samples))
    assert isinstance(out, Metrics)
    return out.samples


def gated_event(gate: PrivacyGate, e: AlertEvent) -> AlertEvent:
    out = gate.filter(Alert(e))
    assert isinstance(out, Alert)
    return out.event


# -- detectors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("10.8.0.6", "ipv4 address"),
        ("peer at 203.0.113.9:51820", "ipv4 address"),
        ("fe80::1%wg0", "ipv6 address"),
        ("[2001:db8::42]:443", "ipv6 address"),
        ("::ffff:192.0.2.1", "ipv4 address"),
        ("0100007F:0050", "ip address (kernel hex form)"),
        ("aa:bb:cc:dd:ee:ff", "mac address"),
        ("AA-BB-CC-DD-EE-FF", "mac address"),
        ("aabb.ccdd.eeff", "mac address"),
        ("alice@example.com", "e-mail address"),
        ("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=", "key"),
        ("-----BEGIN CERTIFICATE-----", "key"),
        ("deadbeefdeadbeefdeadbeefdeadbeef", "key"),
        ("user=bob", "account name"),
        ("CN=alice-laptop", "account name"),
        ("alice-iphone.local", "device host name"),
        ("DESKTOP-7QK2M1", "device host name"),
        # Spellings that try to slip past (from a review with hostile inputs).
        ("10-1-2-3", "ipv4 address"),
        ("10_1_2_3", "ipv4 address"),
        ("0x0A010203", "ipv4 address"),
        ("１０.１.２.３", "ipv4 address"),
        ("10。1。2。3", "ipv4 address"),
        ("10%2E1%2E2%2E3", "ipv4 address"),
        ("10.1.2\u200b.3", "ipv4 address"),
        ("2001%3Adb8%3A%3A1", "ipv6 address"),
        ("2001：db8：：1", "ipv6 address"),
        ("2001-db8--1.ipv6-literal.net", "ipv6 address"),
        ("aa_bb_cc_dd_ee_ff", "mac address"),
        ("aa bb cc dd ee ff", "mac address"),
        ("aabbccddeeff", "mac address"),
        ("alice＠example.com", "e-mail address"),
        ("alice%40example.com", "e-mail address"),
        ("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "key"),
        ("q83vEjRWeJq83vEjRWeJq83v", "key"),
        ("k2n4p6r8t0v2x4z6b8d0f2h4j6l8n0p2", "key"),
        ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgA=", "key"),
        ("Alices-iPhone", "device host name"),
        ("Alices-MacBook-Pro", "device host name"),
        ("disk /home/alice is full", "personal path"),
        ("/etc/openvpn/ccd/alice changed", "personal path"),
    ],
)
def test_identifiers_are_detected(text: str, kind: str) -> None:
    assert identifier_kind(text) == kind


@pytest.mark.parametrize(
    "text",
    [
        "Disk / is 95% full (threshold 90)",
        "udp_receive_buffer_errors_rising_fast",
        "vpn_process_up",
        "eth0:1",
        "tcp/443",
        "wg0",
        "vpns+",
        "12:30:45",
        "0.1.0",
        "/var/lib/docker",
        "server.crt",
        "Disk / has 123456789012 bytes free",
        "2026-12-01 12:30:45",
        "conntrack_nearly_full",
    ],
)
def test_ordinary_names_pass(text: str) -> None:
    assert identifier_kind(text) is None


# -- metrics -----------------------------------------------------------------------------------
def test_unknown_metric_and_undeclared_label_are_refused() -> None:
    gate = PrivacyGate()
    out = gated_frame(
        gate,
        sample("cpu_usage_percent", 12.5),
        sample("peer_bytes", 1.0),
        sample("cpu_usage_percent", 1.0, peer="x"),
    )
    assert out == [sample("cpu_usage_percent", 12.5)]
    assert gate.refusal_count == 2


def test_label_values_outside_their_allowlist_are_refused() -> None:
    gate = PrivacyGate()
    out = gated_frame(
        gate,
        sample("disk_used_percent", 50.0, mount="/"),
        sample("disk_used_percent", 50.0, mount="/home/alice"),
        sample("disk_used_percent", 50.0, mount="/run/user/1000"),
        sample("pressure_some_avg10", 1.0, resource="gpu"),
        sample("net_up", 1.0, interface="10.0.0.1"),
        sample("net_up", 1.0, interface="a" * 40),
    )
    assert [s.l for s in out] == [{"mount": "/"}]
    assert gate.refusal_count == 5


def test_non_finite_values_are_refused() -> None:
    gate = PrivacyGate()
    out = gated_frame(gate, sample("load1", float("nan")), sample("load5", float("inf")))
    assert out == []


@pytest.mark.parametrize(
    ("raw", "sent"), [(0.0, "<5"), (4.0, "<5"), (5.0, 5.0), (17.4, 15.0), (20.0, 20.0)]
)
def test_peer_counts_are_coarsened_below_k_and_bucketed_above(
    raw: float, sent: float | str
) -> None:
    gate = PrivacyGate(k=5)
    (out,) = gated_frame(gate, sample("vpn_active_peers", raw, source="wireguard"))
    assert out.v == sent


def test_k_is_configurable() -> None:
    gate = PrivacyGate(k=10)
    (out,) = gated_frame(gate, sample("vpn_active_peers", 7.0, source="sessions"))
    assert out.v == "<10"
    with pytest.raises(ValueError, match="at least 2"):
        PrivacyGate(k=1)


def _interfaces(out: list[WireSample]) -> list[str | None]:
    return [s.l.get("interface") for s in out if s.m != "vpn_active_peers"]


def test_traffic_is_withheld_while_few_peers() -> None:
    gate = PrivacyGate(k=5)
    rx_tunnel = sample("net_rx_bytes_per_second", 1e6, interface="wg0")
    rx_uplink = sample("net_rx_bytes_per_second", 1e6, interface="eth0")
    conntrack = sample("conntrack_entries", 12.0)
    few = gated_frame(
        gate, sample("vpn_active_peers", 1.0, source="wireguard"), rx_tunnel, rx_uplink, conntrack
    )
    assert few == [sample("vpn_active_peers", "<5", source="wireguard")]
    assert gate.withheld == 3
    many = gated_frame(
        gate, sample("vpn_active_peers", 40.0, source="wireguard"), rx_tunnel, rx_uplink, conntrack
    )
    assert _interfaces(many) == ["wg0", "eth0", None]


def test_tunnel_traffic_is_withheld_when_no_peer_count_is_readable() -> None:
    gate = PrivacyGate(k=5)
    out = gated_frame(
        gate,
        sample("net_rx_bytes_per_second", 1e6, interface="tun0"),
        sample("net_tx_bytes_per_second", 1e6, interface="vpns+"),
        sample("net_rx_bytes_per_second", 1e6, interface="eth0"),
        sample("net_up", 1.0, interface="tun0"),
    )
    assert [(s.m, s.l["interface"]) for s in out] == [
        ("net_rx_bytes_per_second", "eth0"),
        ("net_up", "tun0"),
    ]


def test_alert_values_follow_the_traffic_rule() -> None:
    gate = PrivacyGate(k=5)
    gate.observe([sample("vpn_active_peers", 2.0, source="wireguard")])
    out = gated_event(
        gate,
        event(
            metric="net_rx_bytes_per_second",
            labels={"interface": "eth0"},
            value=9e8,
            summary="eth0 receives 900000000 B/s",
        ),
    )
    assert out.value is None
    assert "900000000" not in out.summary


def test_summary_rendered_from_a_refused_label_is_withheld() -> None:
    gate = PrivacyGate()
    out = gated_event(gate, event(labels={"mount": "/srv/alice"}, summary="Disk /srv/alice full"))
    assert out.labels == {"mount": "/srv/alice"}  # an ordinary mount point passes
    out = gated_event(gate, event(labels={"mount": "/var/x y"}, summary="Disk /var/x y is full"))
    assert out.labels == {}
    assert out.summary == WITHHELD_SUMMARY


def test_refusal_logs_the_field_never_the_value(caplog: pytest.LogCaptureFixture) -> None:
    gate = PrivacyGate()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            gated_frame(gate, sample("net_up", 1.0, interface="alice@example.com"))
    assert "alice" not in caplog.text
    assert "net_up" in caplog.text
    assert len(caplog.records) == 1, "logged once per field and reason"
    assert gate.refusal_count == 3


# -- alerts ------------------------------------------------------------------------------------
def test_alert_with_identifier_in_summary_is_kept_but_summary_withheld() -> None:
    gate = PrivacyGate()
    out = gated_event(gate, event(summary="peer 10.8.0.6 dropped"))
    assert out.summary == WITHHELD_SUMMARY
    assert out.id == "e" * 32
    assert out.status == "firing"
    assert out.value == 95.0


def test_alert_bad_labels_are_removed_not_the_alert() -> None:
    gate = PrivacyGate()
    out = gated_event(gate, event(labels={"mount": "/home/bob", "peer": "x"}))
    assert out.labels == {}


def test_alert_on_a_coarsened_metric_coarsens_value_and_summary() -> None:
    gate = PrivacyGate()
    out = gated_event(
        gate,
        event(
            metric="vpn_active_peers",
            labels={"source": "wireguard"},
            value=1.0,
            summary="Only 1 peer connected",
        ),
    )
    assert out.value == "<5"
    assert "1 peer" not in out.summary


def test_hello_ping_pass_through_checked() -> None:
    gate = PrivacyGate()
    hello = Hello(
        agent_version="0.1.0",
        interval=5.0,
        metrics=["load1", "user_ips"],
        rules=["disk_full", "user=bob"],
        buffer_seconds=3600,
    )
    out = gate.filter(hello)
    assert isinstance(out, Hello)
    assert out.metrics == ["load1"]
    assert out.rules == ["disk_full"]
    ping = Ping(ts=1.0)
    assert gate.filter(ping) == ping


# -- properties --------------------------------------------------------------------------------
def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


identifiers = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.binary(min_size=6, max_size=6).map(_mac),
    st.emails(),
    st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode()),
)
"""IP addresses, MAC addresses, e-mail addresses and WireGuard-style keys."""


def _placements(ident: str) -> list[str]:
    return [ident, f"x{ident}", f"{ident} y", f"peer {ident} here", f"/{ident}"]


def _leaks(ident: str, wire: str) -> bool:
    return ident in wire or ident.lower() in wire.lower()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(ident=identifiers, where=st.integers(0, 4))
def test_no_generated_identifier_leaves_in_metrics(ident: str, where: int) -> None:
    text = _placements(ident)[where]
    gate = PrivacyGate()
    message = frame(
        sample("disk_used_percent", 1.0, mount=text),
        sample("net_up", 1.0, interface=text),
        sample("vpn_process_up", 1.0, process=text),
        sample("cert_days_left", 1.0, cert=text),
        sample(text, 1.0),
        sample("load1", 0.5),
    )
    out = gate.filter(message)
    assert out is not None
    assert not _leaks(ident, encode(out))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    ident=identifiers,
    where=st.integers(0, 4),
    field=st.sampled_from(["summary", "rule", "label", "metric"]),
)
def test_no_generated_identifier_leaves_in_alerts(ident: str, where: int, field: str) -> None:
    text = _placements(ident)[where]
    choices: dict[str, dict[str, object]] = {
        "summary": {"summary": text},
        "rule": {"rule": text},
        "label": {"labels": {"mount": text}},
        "metric": {"metric": text},
    }
    overrides = choices[field]
    gate = PrivacyGate()
    out = gate.filter(Alert(event(**overrides)))
    assert out is not None
    assert not _leaks(ident, encode(out))


@settings(max_examples=100, deadline=None)
@given(ident=identifiers)
def test_no_generated_identifier_leaves_in_hello(ident: str) -> None:
    gate = PrivacyGate()
    hello = Hello(
        agent_version="0.1.0",
        interval=5.0,
        metrics=[ident, "load1"],
        rules=[ident],
        buffer_seconds=3600,
    )
    out = gate.filter(hello)
    assert out is not None
    assert not _leaks(ident, encode(out))


@settings(max_examples=100, deadline=None)
@given(ident=identifiers, field=st.sampled_from(["summary", "rule", "label"]))
def test_no_generated_identifier_leaves_in_the_firing_alerts_of_a_hello(
    ident: str, field: str
) -> None:
    choices: dict[str, dict[str, object]] = {
        "summary": {"summary": f"peer {ident}"},
        "rule": {"rule": ident},
        "label": {"labels": {"mount": ident}},
    }
    hello = Hello(
        agent_version="0.1.0",
        interval=5.0,
        buffer_seconds=3600,
        firing=[event(**choices[field])],
    )
    out = PrivacyGate().filter(hello)
    assert isinstance(out, Hello)
    assert len(out.firing) == 1  # gated, never dropped
    assert not _leaks(ident, encode(out))
