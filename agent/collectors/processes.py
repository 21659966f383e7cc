"""VPN daemon processes: how many run, their CPU and memory, and restarts since agent start.

Processes are found by reading /proc/<pid>/comm (the 15-character kernel name), never the
command line. A pid's name is cached: it is re-read while the process is young (it may still
exec), and every ``RESCAN_SECONDS`` for all. Only matched processes' /proc/<pid>/stat is read.

Listing /proc is most of the cost, so it is skipped in a cycle where no process can have
appeared: the last pid the kernel handed out (/proc/loadavg) is the one it had handed out before
the previous listing. A process that exited meanwhile is noticed by its unreadable stat file.
That kernel figure belongs to the reader's pid namespace, so this is done only when /proc is
the agent's own namespace's (/proc/self/status shows a single NSpid); otherwise /proc is listed
every cycle.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from agent.collectors.labels import unique_labels
from agent.collectors.sources import SOURCE_ERRORS, read_bytes, why
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
        self._proc_str = str(proc_root)
        self._ticks = clock_ticks or os.sysconf("SC_CLK_TCK")
        self._page = page_size or os.sysconf("SC_PAGE_SIZE")
        self._comms: dict[str, tuple[str, float]] = {}  # listed pid -> (comm, when first seen)
        self._young: dict[str, float] = {}  # pids seen less than YOUNG_SECONDS ago
        self._matched: dict[str, tuple[int, list[str]]] = {}  # pids with a watched comm
        self._not_pids: set[str] = set()  # /proc entries that are not processes
        self._rescanned: float | None = None
        self._seen: set[str] = set()
        self._last_running: dict[str, frozenset[Identity]] = {}
        self._restarts = dict.fromkeys(self._labels, 0)
        self._prev_cpu: dict[Identity, int] = {}
        self._prev_now: float | None = None
        self._proc_labels = {label: labels(process=label) for label in self._labels}
        self._loadavg = f"{proc_root}/loadavg"
        self._own_namespace: bool | None = None  # /proc is this pid namespace's; None: unknown
        self._listed_after: int | None = None  # last pid handed out before the last listing

    def collect(self, now: float) -> Sequence[Sample]:
        last_pid = self._last_pid()
        rescan = self._rescanned is None or now - self._rescanned >= RESCAN_SECONDS
        entries: list[str] | None = None
        if rescan or last_pid is None or last_pid != self._listed_after:
            self._listed_after = None
            try:
                entries = os.listdir(self._proc)
            except SOURCE_ERRORS as exc:
                msg = f"process list unreadable: {why(self._proc, exc)}"
                raise SourceUnavailable(msg) from None
            self._listed_after = last_pid
        matched = self._match(now, entries)

        cpu_now: dict[Identity, int] = {}
        members: dict[str, set[Identity]] = {label: set() for label in self._labels}
        rss_pages = dict.fromkeys(self._labels, 0)
        for pid, label_list in matched:
            try:
                stat = read_bytes(f"{self._proc_str}/{pid}/stat")
                state, start, cpu, rss = parse_stat(stat.decode("utf-8", "replace"))
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
            proc = self._proc_labels[label]
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

    def _last_pid(self) -> int | None:
        """The last pid the kernel handed out, or None where it cannot be relied on."""
        if self._own_namespace is None:
            try:
                status = read_bytes(f"{self._proc_str}/self/status")
                nspid = status.split(b"\nNSpid:", 1)[1].split(b"\n", 1)[0].split()
                self._own_namespace = len(nspid) == 1 and int(nspid[0]) == os.getpid()
            except SOURCE_ERRORS:
                self._own_namespace = False  # no NSpid (kernel before 4.1) or no such file
        if not self._own_namespace:
            return None
        try:
            return int(read_bytes(self._loadavg).split()[4])
        except SOURCE_ERRORS:
            return None

    def _match(self, now: float, entries: list[str] | None) -> list[tuple[int, list[str]]]:
        """Pids whose comm is a watched name, with that name's labels; refreshes the cache.

        ``entries`` is the /proc listing, or None when no process appeared since the last one.
        Between rescans only what changed is looked at: pids gone from the listing are
        forgotten, new ones read, and the young ones re-read (set operations over the listing,
        not a Python loop over every process).
        """
        first_scan = self._rescanned is None
        if entries is not None and (
            self._rescanned is None or now - self._rescanned >= RESCAN_SECONDS
        ):
            self._rescanned = now
            # Processes already running when the agent starts are not young: they have exec'd.
            self._rescan(now, float("-inf") if first_scan else now, entries)
        else:
            self._update(now, entries)
        return list(self._matched.values())

    def _read_comm(self, entry: str) -> str | None:
        try:
            raw = read_bytes(f"{self._proc_str}/{entry}/comm")
        except OSError:
            return None  # exited since the listing
        return raw.decode("utf-8", "replace").rstrip("\n")

    def _remember(self, entry: str, comm: str, born: float) -> None:
        self._comms[entry] = (comm, born)
        label_list = self._by_comm.get(comm)
        if label_list is not None:
            self._matched[entry] = (int(entry), label_list)
        else:
            self._matched.pop(entry, None)

    def _forget(self, entry: str) -> None:
        del self._comms[entry]
        self._young.pop(entry, None)
        self._matched.pop(entry, None)

    def _rescan(self, now: float, born: float, entries: list[str]) -> None:
        """Every pid's comm read again."""
        old = self._comms
        self._comms, self._young, self._matched = {}, {}, {}
        for entry in entries:
            if not entry.isdigit():
                continue
            comm = self._read_comm(entry)
            if comm is None:
                continue
            cached = old.get(entry)
            entry_born = cached[1] if cached is not None else born
            self._remember(entry, comm, entry_born)
            if now - entry_born < YOUNG_SECONDS:
                self._young[entry] = entry_born

    def _update(self, now: float, entries: list[str] | None) -> None:
        new: set[str] = set()
        if entries is not None:
            listed = set(entries)
            known = self._comms.keys()
            gone = known - listed
            new = listed - known - self._not_pids
            for entry in gone:
                self._forget(entry)
        for entry, born in list(self._young.items()):
            if now - born >= YOUNG_SECONDS:
                del self._young[entry]
                continue
            comm = self._read_comm(entry)
            if comm is None:
                self._forget(entry)
            else:
                self._remember(entry, comm, born)
        for entry in new:
            if not entry.isdigit():
                self._not_pids.add(entry)
                continue
            comm = self._read_comm(entry)
            if comm is not None:
                self._remember(entry, comm, now)
                self._young[entry] = now
