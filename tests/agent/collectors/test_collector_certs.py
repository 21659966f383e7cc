from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.collectors.certs import CertCollector
from agent.collectors.der import (
    GENERALIZED_TIME,
    UTC_TIME,
    CertificateError,
    first_certificate,
    not_after,
    parse_time,
)
from agent.collectors.runner import CollectorRunner

from .collector_testkit import assert_valid, by_label

NOW = 1_800_000_000  # 2027-01-15, whole seconds
_KEY = ec.generate_private_key(ec.SECP256R1())


def make_cert(expires: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpn.example.net")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.fromtimestamp(NOW, UTC) - timedelta(days=1))
        .not_valid_after(expires)
        .sign(_KEY, hashes.SHA256())
    )


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def in_days(days: float) -> datetime:
    return datetime.fromtimestamp(NOW, UTC) + timedelta(days=days)


def certs(*paths: Path) -> CertCollector:
    return CertCollector(cert_files=list(paths), clock=lambda: float(NOW))


def test_days_left_of_a_generated_certificate(tmp_path: Path) -> None:
    path = tmp_path / "server.pem"
    path.write_bytes(pem(make_cert(in_days(10))))
    c = certs(path)
    samples = c.collect(1.0)
    assert_valid(samples)
    assert by_label(samples, "cert_days_left", "cert") == {"server.pem": 10.0}
    assert c.problems() == ()


def test_generalized_time_after_2049(tmp_path: Path) -> None:
    expires = datetime(2061, 3, 1, 12, 0, 0, tzinfo=UTC)
    cert = make_cert(expires)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert bytes([GENERALIZED_TIME, 15]) + b"20610301120000Z" in der
    path = tmp_path / "long.crt"
    path.write_bytes(der)  # a DER file works too
    got = by_label(certs(path).collect(1.0), "cert_days_left", "cert")
    assert got == {"long.crt": (expires.timestamp() - NOW) / 86400}


def test_first_certificate_of_a_chain_and_sanitised_labels(tmp_path: Path) -> None:
    chain = tmp_path / "full chain (2027).pem"
    chain.write_bytes(
        b"leaf comment\n" + pem(make_cert(in_days(10))) + pem(make_cert(in_days(100)))
    )
    other = tmp_path / "sub"
    other.mkdir()
    same_name = other / "full chain (2027).pem"
    same_name.write_bytes(pem(make_cert(in_days(20))))
    samples = certs(chain, same_name).collect(1.0)
    assert_valid(samples)
    assert by_label(samples, "cert_days_left", "cert") == {
        "full_chain__2027_.pem": 10.0,
        "full_chain__2027_.pem-2": 20.0,
    }


def test_bad_files_give_one_reason_each_without_paths(tmp_path: Path) -> None:
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    junk = home / "junk.pem"
    junk.write_bytes(b"not a certificate\n")
    truncated = home / "cut.pem"
    truncated.write_bytes(pem(make_cert(in_days(1)))[:200] + b"\n-----END CERTIFICATE-----\n")
    c = certs(home / "missing.pem", junk, truncated, home)
    assert c.collect(1.0) == []
    assert c.problems() == (
        "certificate missing.pem: file not found; its days-left figure is absent",
        "certificate junk.pem: not a readable certificate: no PEM certificate block; "
        "its days-left figure is absent",
        "certificate cut.pem: not a readable certificate: PEM block is not valid base64; "
        "its days-left figure is absent",
        "certificate alice: not a readable certificate: not a regular file; "
        "its days-left figure is absent",
    )
    assert not [p for p in c.problems() if str(tmp_path) in p]


def test_runner_logs_a_bad_certificate_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = CollectorRunner([certs(Path("/home/alice/vpn/user.pem"))], logging.getLogger("t"))
    with caplog.at_level(logging.INFO):
        for now in (1.0, 2.0, 100.0, 200.0):
            runner.run(now)
    assert [r.getMessage() for r in caplog.records] == [
        "collector certs: certificate user.pem: file not found; its days-left figure is absent"
    ]


def test_renewed_certificate_seen_after_refresh(tmp_path: Path) -> None:
    path = tmp_path / "server.pem"
    path.write_bytes(pem(make_cert(in_days(2))))
    c = CertCollector(cert_files=[path], clock=lambda: float(NOW), refresh_seconds=60.0)
    assert by_label(c.collect(0.0), "cert_days_left", "cert") == {"server.pem": 2.0}
    path.write_bytes(pem(make_cert(in_days(90))))
    assert by_label(c.collect(59.0), "cert_days_left", "cert") == {"server.pem": 2.0}
    assert by_label(c.collect(60.0), "cert_days_left", "cert") == {"server.pem": 90.0}


def test_parse_time_forms() -> None:
    assert (
        parse_time(UTC_TIME, b"491231235959Z")
        == datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    )
    assert parse_time(UTC_TIME, b"500101000000Z") == datetime(1950, 1, 1, tzinfo=UTC).timestamp()
    assert parse_time(UTC_TIME, b"2701150800Z") == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert (
        parse_time(GENERALIZED_TIME, b"20610301120000Z")
        == datetime(2061, 3, 1, 12, tzinfo=UTC).timestamp()
    )
    assert parse_time(GENERALIZED_TIME, b"20610301120000.5Z") == pytest.approx(
        datetime(2061, 3, 1, 12, tzinfo=UTC).timestamp() + 0.5
    )
    for tag, raw in [
        (UTC_TIME, b"491231235959"),
        (UTC_TIME, b"49123123595Z"),
        (UTC_TIME, b"491332235959Z"),
        (GENERALIZED_TIME, b"2061030112Z"),
        (0x04, b"20610301120000Z"),
    ]:
        with pytest.raises(CertificateError):
            parse_time(tag, raw)


def test_der_walk_rejects_garbage() -> None:
    for data in [b"", b"\x30", b"\x30\x05\x30", b"\x30\x84\xff\xff\xff\xff", b"\x02\x01\x00"]:
        with pytest.raises(CertificateError):
            not_after(data)
    der = make_cert(in_days(1)).public_bytes(serialization.Encoding.DER)
    assert not_after(der) == NOW + 86400
    for cut in (4, 40, 120, len(der) - 1):
        with pytest.raises(CertificateError, match="truncated"):
            not_after(der[:cut])
    with pytest.raises(CertificateError, match="not closed"):
        first_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
