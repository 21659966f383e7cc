"""Active WireGuard peers: a count of recent handshakes, nothing else.

``wg show all latest-handshakes`` prints ``iface<TAB>public key<TAB>unix time`` per peer. Each
line's time is compared with the clock and the line is dropped at once: no key, interface or
time is kept in any object. ``wg`` is run at most once every ``refresh_seconds`` (no shell, a
short timeout); between runs the cached count (or the cached reason it failed) is reported.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence

from agent.samples import Sample, SourceUnavailable, labels

HANDSHAKE_WINDOW_SECONDS = 180.0
REFRESH_SECONDS = 10.0
WG_TIMEOUT_SECONDS = 2.0
WG_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PEERS = labels(source="wireguard")


def find_wg() -> str | None:
    """Absolute path of the ``wg`` tool in the system directories (not the caller's PATH)."""
    return shutil.which("wg", path=WG_SEARCH_PATH)


def wg_runner(wg: str) -> Callable[[], str]:
    """A ``run_wg`` that runs ``<wg> show all latest-handshakes`` and returns its output."""

    def run_wg() -> str:
        done = subprocess.run(
            [wg, "show", "all", "latest-handshakes"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WG_TIMEOUT_SECONDS,
            check=True,
            env={"PATH": WG_SEARCH_PATH, "LC_ALL": "C"},
        )
        return done.stdout

    return run_wg


def count_recent(output: str, now: float, window: float = HANDSHAKE_WINDOW_SECONDS) -> int:
    """Peers whose latest handshake is within ``window`` seconds of ``now`` (0 means never)."""
    count = 0
    for line in output.splitlines():
        stamp = line.rpartition("\t")[2]
        if stamp.isdigit():
            ts = int(stamp)
            if ts > 0 and now - ts <= window:
                count += 1
    return count


class WireguardCollector:
    """vpn_active_peers{source="wireguard"}."""

    name = "wireguard"

    def __init__(
        self,
        *,
        run_wg: Callable[[], str] | None,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self._run_wg = run_wg
        self._clock = clock
        self._refresh = refresh_seconds
        self._ran: float | None = None
        self._count: int | None = None
        self._failure = ""

    def collect(self, now: float) -> Sequence[Sample]:
        if self._run_wg is None:
            raise SourceUnavailable("the `wg` tool is not installed; WireGuard peers not counted")
        if self._ran is None or not 0 <= now - self._ran < self._refresh:
            self._ran = now
            self._count, self._failure = None, ""
            try:
                self._count = count_recent(self._run_wg(), self._clock())
            except FileNotFoundError:
                self._failure = "the `wg` tool is not installed; WireGuard peers not counted"
            except PermissionError:
                self._failure = "not permitted to run `wg`; WireGuard peers not counted"
            except subprocess.CalledProcessError as exc:
                self._failure = (
                    f"`wg show` failed (exit {exc.returncode}); it needs root or CAP_NET_ADMIN"
                )
            except subprocess.TimeoutExpired:
                self._failure = f"`wg show` took over {WG_TIMEOUT_SECONDS:g} s; stopped"
            except OSError as exc:
                self._failure = f"`wg` could not be run ({exc.strerror or type(exc).__name__})"
        if self._count is None:
            raise SourceUnavailable(self._failure)
        return [Sample("vpn_active_peers", float(self._count), _PEERS)]
