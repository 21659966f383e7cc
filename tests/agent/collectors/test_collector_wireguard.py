from __future__ import annotations

import subprocess

import pytest

from agent.collectors.wireguard import WireguardCollector, count_recent, wg_runner
from agent.samples import SourceUnavailable, labels

NOW = 1_700_000_000.0
KEYS = [
    "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
    "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=",
    "gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA=",
    "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
]
OUTPUT = (
    f"wg0\t{KEYS[0]}\t{int(NOW) - 30}\n"  # 30 s ago: active
    f"wg0\t{KEYS[1]}\t{int(NOW) - 180}\n"  # exactly 180 s: active
    f"wg0\t{KEYS[2]}\t{int(NOW) - 181}\n"  # too old
    f"wg1\t{KEYS[3]}\t0\n"  # never
)


class FakeWg:
    def __init__(self, output: str) -> None:
        self.calls = 0
        self._output = output

    def __call__(self) -> str:
        self.calls += 1
        return self._output


def test_counts_recent_handshakes_only_and_keeps_no_key() -> None:
    wg = FakeWg(OUTPUT)
    c = WireguardCollector(run_wg=wg, clock=lambda: NOW)
    samples = c.collect(1.0)
    assert samples == [("vpn_active_peers", 2.0, labels(source="wireguard"))]
    kept = repr(samples) + repr(c) + repr(vars(c))
    assert not [k for k in KEYS if k in kept or k[:20] in kept]
    assert "wg1" not in kept


def test_wg_runs_at_most_every_ten_seconds() -> None:
    wg = FakeWg(OUTPUT)
    c = WireguardCollector(run_wg=wg, clock=lambda: NOW)
    for now in (0.0, 1.0, 5.0, 9.9):
        assert c.collect(now)[0].value == 2.0
    assert wg.calls == 1
    c.collect(10.0)
    assert wg.calls == 2


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (FileNotFoundError(2, "No such file"), "the `wg` tool is not installed"),
        (PermissionError(13, "denied"), "not permitted to run `wg`"),
        (
            subprocess.CalledProcessError(1, ["wg"], stderr="Unable to access interface"),
            r"`wg show` failed \(exit 1\); it needs root or CAP_NET_ADMIN",
        ),
        (subprocess.TimeoutExpired(["wg"], 2.0), r"`wg show` took over 2 s"),
    ],
)
def test_failures_are_one_clear_reason_and_rate_limited(exc: Exception, reason: str) -> None:
    calls: list[float] = []

    def run() -> str:
        calls.append(1.0)
        raise exc

    c = WireguardCollector(run_wg=run, clock=lambda: NOW)
    for now in (0.0, 1.0, 2.0):
        with pytest.raises(SourceUnavailable, match=reason):
            c.collect(now)
    assert len(calls) == 1


def test_no_wg_tool() -> None:
    with pytest.raises(SourceUnavailable, match="not installed"):
        WireguardCollector(run_wg=None).collect(0.0)


def test_real_runner_with_a_missing_binary() -> None:
    run = wg_runner("/nonexistent/wg")
    with pytest.raises(FileNotFoundError):
        run()
    c = WireguardCollector(run_wg=run)
    with pytest.raises(SourceUnavailable, match="not installed"):
        c.collect(0.0)


def test_count_recent_ignores_junk() -> None:
    assert count_recent("", NOW) == 0
    assert count_recent("garbage\nwg0\tkey\tnot-a-number\n", NOW) == 0
    assert count_recent(f"wg0\tk\t{int(NOW) + 5}\n", NOW) == 1  # clock skew: still recent
