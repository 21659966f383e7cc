"""The real-machine smoke test: the default collectors on this Linux host."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.collectors.registry import default_collectors
from agent.collectors.runner import CollectorRunner
from agent.samples import Sample

from .collector_testkit import assert_valid

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_events: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _events is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        _events.append(("write" if writing else "open", str(path)))
    elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork"):
        _events.append(("spawn", repr(args)))
    elif event in ("os.remove", "os.rename", "os.mkdir", "os.chmod", "os.truncate", "os.link"):
        _events.append(("write", repr(args)))


sys.addaudithook(_audit)


@contextmanager
def recording() -> Iterator[list[tuple[str, str]]]:
    """Files opened and processes started (audit events) while inside the block."""
    global _events
    _events = []
    try:
        yield _events
    finally:
        _events = None


def write_cert(path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smoke")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the real /proc")
def test_default_collectors_on_this_machine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = tmp_path / "smoke.pem"
    write_cert(cert)
    collectors = default_collectors(
        vpn_processes=[],
        vpn_interfaces=["wg0", "tun0"],
        vpn_ports=[("udp", 51820), ("any", 443), ("tcp", 22)],
        cert_files=[cert],
    )
    names = [c.name for c in collectors]
    assert len(names) == len(set(names))
    runner = CollectorRunner(collectors, logging.getLogger("smoke"))
    cycles: list[list[Sample]] = []
    with caplog.at_level(logging.INFO), recording() as recorded:
        for _ in range(2):
            cycles.append(runner.run(time.monotonic()))
            time.sleep(0.05)
    for samples in cycles:
        assert_valid(samples)
        ups = {dict(s.labels)["collector"] for s in samples if s.metric == "agent_collector_up"}
        assert ups == set(names)
    second = {s.metric for s in cycles[1]}
    for metric in ("cpu_usage_percent", "memory_total_bytes", "fd_allocated", "cert_days_left"):
        assert metric in second
    bugs = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert bugs == []

    # What the collectors touched: reads only, no per-connection table, no command lines.
    assert [e for e in recorded if e[0] == "write"] == []
    assert [e for e in recorded if e[0] == "spawn" and "wg" not in e[1]] == []
    opened = [p for kind, p in recorded if kind == "open"]
    assert opened
    assert [p for p in opened if p.endswith("/net/nf_conntrack")] == []
    assert [p for p in opened if p.endswith(("/cmdline", "/environ"))] == []
    assert [p for p in opened if p.startswith("/home")] == []
