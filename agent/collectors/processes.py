"""VPN daemon processes: how many run, their CPU and memory, and restarts since agent start.

Processes are found by reading /proc/<pid>/comm (the 15-character kernel name), never the
command line. A pid's name is cached: it is re-read while the process is young (it may still
exec), and every ``RESCAN_SECONDS`` for all. Only matched processes' /proc/<pid>/stat is read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from agent.collectors.labels import unique_labels
from agent.collectors.sources import SOURCE_ERRORS, why
from agent.samples import Sample, SourceUnavailable, labels

KNOWN_VPN_DAEMONS = ("openvpn", "charon", "ocserv", "accel-pppd")
"""Watched when no process list is configured; reported once seen running."""
COMM_LEN = 15
YOUNG_SECONDS = 5.0
RESCAN_SECONDS = 30.0

Identity = tuple[int, int]
"""(pid, start time in clock ticks since boot): one process, even across pid reuse."""


def parse_stat(text: str) -> tuple[str, int, int, int]:
    """(state, start ticks, utime + stime ticks, rss pages) from /proc/<pid>/stat."""
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[19]), int(rest[11]) + int(rest[12]), int(rest[21])


class ProcessCollector:
    """vpn_process_up, vpn_process_cpu_percent, vpn_process_rss_bytes, vpn_process_restarts.

    With ``vpn_processes`` given, each is always reported (0 when not running). Empty means
    auto: the known daemons are watched and each is reported from the first time it is seen
    running, so a daemon that dies afterwards reports 0. A restart is counted when the set of
    (pid, start time) for a name becomes one sharing no process with the last running set.
    """

    name = "vpn_processes"

    def __init__(
        self,
        *,
        vpn_processes: Sequence[str] = (),
        proc_root: Path = Path("/proc"),
        clock_ticks: int | None = None,
        page_size: int | None = None,
    ) -> None:
        names = list(dict.fromkeys(vpn_processes)) or list(KNOWN_VPN_DAEMONS)
        self._explicit = bool(vpn_processes)
        self._labels = unique_labels(names)
        self._by_comm: dict[str, list[str]] = {}
        for raw, label in zip(names, self._labels, strict=True):
            self._by_comm.setdefault(raw[:COMM_LEN], []).append(label)
        self._proc = proc_root
        self._ticks = clock_ticks or os.sysconf("SC_CLK_TCK")
        self._page = page_size or os.sysconf("SC_PAGE_SIZE")
        self._comms: dict[int, tuple[str, float]] = {}
        self._rescanned: float | None = None
        self._seen: set[str] = set()
        self._last_running: dict[str, frozenset[Identity]] = {}
        self._restarts = dict.fromkeys(self._labels, 0)
        self._prev_cpu: dict[Identity, int] = {}
        self._prev_now: float | None = None

    def collect(self, now: float) -> Sequence[Sample]:
        try:
            entries = os.listdir(self._proc)
        except SOURCE_ERRORS as exc:
            raise SourceUnavailable(f"process list unreadable: {why(self._proc, exc)}") from None
        matched = self._match(now, entries)

        cpu_now: dict[Identity, int] = {}
        members: dict[str, set[Identity]] = {label: set() for label in self._labels}
        rss_pages = dict.fromkeys(self._labels, 0)
        for pid, label_list in matched:
            try:
                with open(f"{self._proc}/{pid}/stat", encoding="utf-8", errors="replace") as f:
                    state, start, cpu, rss = parse_stat(f.read())
            except SOURCE_ERRORS:
                continue  # exited since it was listed
            if state in ("Z", "X"):
                continue
            ident = (pid, start)
            cpu_now[ident] = cpu
            for label in label_list:
                members[label].add(ident)
                rss_pages[label] += rss

        prev_cpu, prev_now = self._prev_cpu, self._prev_now
        self._prev_cpu, self._prev_now = cpu_now, now
        elapsed = now - prev_now if prev_now is not None and now > prev_now else None

        out: list[Sample] = []
        for label in self._labels:
            running = frozenset(members[label])
            if running:
                self._seen.add(label)
                last = self._last_running.get(label)
                if last is not None and running.isdisjoint(last):
                    self._restarts[label] += 1
                self._last_running[label] = running
            if not self._explicit and label not in self._seen:
                continue
            proc = labels(process=label)
            # 1/0, not a process count: per-session workers would reveal the session count.
            out.append(Sample("vpn_process_up", 1.0 if running else 0.0, proc))
            out.append(Sample("vpn_process_restarts", float(self._restarts[label]), proc))
            if not running:
                continue
            out.append(Sample("vpn_process_rss_bytes", float(rss_pages[label] * self._page), proc))
            if elapsed is not None:
                ticks, known = 0, False
                for ident in running:
                    before = prev_cpu.get(ident)
                    if before is not None and cpu_now[ident] >= before:
                        ticks += cpu_now[ident] - before
                        known = True
                if known:  # not for processes all new since the last cycle
                    percent = ticks / self._ticks / elapsed * 100.0
                    out.append(Sample("vpn_process_cpu_percent", percent, proc))
        return out

    def _match(self, now: float, entries: list[str]) -> list[tuple[int, list[str]]]:
        """Pids whose comm is a watched name, with that name's labels; refreshes the cache."""
        first_scan = self._rescanned is None
        rescan = self._rescanned is None or now - self._rescanned >= RESCAN_SECONDS
        if rescan:
            self._rescanned = now
        # Processes already running when the agent starts are not young: they have exec'd.
        born = float("-inf") if first_scan else now
        proc = str(self._proc)
        comms: dict[int, tuple[str, float]] = {}
        matched: list[tuple[int, list[str]]] = []
        for entry in entries:
            if not entry.isdigit():
                continue
            pid = int(entry)
            cached = self._comms.get(pid)
            if cached is None or rescan or now - cached[1] < YOUNG_SECONDS:
                try:
                    with open(f"{proc}/{entry}/comm", encoding="utf-8", errors="replace") as f:
                        comm = f.read().rstrip("\n")
                except OSError:
                    continue  # exited since the listing
                cached = (comm, cached[1] if cached is not None else born)
            comms[pid] = cached
            label_list = self._by_comm.get(cached[0])
            if label_list is not None:
                matched.append((pid, label_list))
        self._comms = comms
        return matched
