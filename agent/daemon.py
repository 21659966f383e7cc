"""The agent daemon: collect → ring buffer → rules → privacy gate → stream, every interval.

Stages stay apart: collectors only read (in a worker thread, so psutil and /proc reads never
block the event loop), the buffer only stores, the engine only decides, the gate only filters,
the stream only sends. This module wires them and owns the process: signals (SIGTERM drains,
SIGHUP reloads rules), systemd notify, the optional Prometheus exposition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from agent import __version__
from agent.buffer import RingBuffer
from agent.collectors.registry import default_collectors
from agent.collectors.runner import CollectorRunner
from agent.config import AgentSettings
from agent.engine import RuleEngine
from agent.metrics import METRICS
from agent.outbox import Outbox
from agent.privacy import PrivacyGate, default_is_tunnel
from agent.rules import RulesError, RuleSet, load_rules, merge_rules, rules_from_dicts
from agent.samples import Collector, Sample, SeriesKey
from agent.stream import StreamClient
from agent.systemd import Notifier
from agent.wire import (
    MAX_HELLO_FIRING,
    MAX_SAMPLES,
    Alert,
    AlertEvent,
    Config,
    Hello,
    Metrics,
    WireSample,
    encode,
)

if TYPE_CHECKING:
    from agent.exposition import Exposition

DRAIN_SECONDS = 5.0
EXIT_CONFIG = 2
SHOWN_ERRORS = 5
log = logging.getLogger("oneconnect.agent")


class Agent:
    """One agent: its pipeline and state, all in memory."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        collectors: Sequence[Collector] | None = None,
        rules: RuleSet | None = None,
        clock: Callable[[], float] = time.time,
        out: TextIO | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.out = out or sys.stdout
        self.interval = settings.interval
        capacity = max(2, math.ceil(settings.buffer_seconds / settings.interval))
        self.buffer = RingBuffer(capacity, settings.max_series)
        self.rules = rules if rules is not None else load_rules(settings.rules)
        self.engine = RuleEngine(self.rules, history=self._history)
        self.gate = PrivacyGate(
            k=settings.peer_k, is_tunnel=default_is_tunnel(settings.vpn_interfaces)
        )
        if collectors is None:
            collectors = default_collectors(
                vpn_processes=settings.vpn_processes,
                vpn_interfaces=settings.vpn_interfaces,
                vpn_ports=settings.ports(),
                cert_files=settings.cert_files,
            )
        self.runner = CollectorRunner(list(collectors), log)
        self.outbox = Outbox(settings.outbox_size)
        self.exposition: Exposition | None = None
        if settings.metrics_listen:
            # Imported only when asked for: aiohttp.web costs ~2 MiB of RSS.
            from agent.exposition import Exposition

            self.exposition = Exposition()
        self.metrics_port: int | None = None
        self.seq = 0
        self.cycle_cpu = 0.0
        self.stream: StreamClient | None = None
        if settings.server_url:
            if settings.token is None:
                raise ValueError("token is required when server_url is set")
            self.stream = StreamClient(
                server_url=settings.server_url,
                token=settings.token.get_secret_value(),
                hello=self.hello,
                gate=self.gate.filter,
                outbox=self.outbox,
                on_config=self.apply_config,
            )
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._reload_requested = False
        self._truncation_logged = False
        self._file_rules = self.rules
        self._pushed_rules: RuleSet | None = None
        self._notifier = Notifier()

    # -- one cycle -------------------------------------------------------------------------
    def hello(self) -> Hello:
        return Hello(
            agent_version=__version__,
            interval=self.interval,
            metrics=sorted(METRICS),
            rules=[rule.name for rule in self.rules.rules],
            buffer_seconds=int(self.buffer.capacity * self.interval),
            firing=self.acked_firing(),
        )

    def acked_firing(self) -> list[AlertEvent]:
        """Alerts still firing whose firing event the server acked (it left the outbox), the
        oldest first: a server that restarted since learns them from the next hello."""
        acked = [e for e in self.engine.firing() if e.id not in self.outbox]
        acked.sort(key=lambda e: e.started_at)
        return acked[:MAX_HELLO_FIRING]

    def _history(self, key: SeriesKey, since: float, until: float) -> Sequence[float]:
        return self.buffer.values(key, since, until)

    def collect(self, now: float) -> list[Sample]:
        """Read every collector (blocking I/O; runs in a worker thread)."""
        started = time.perf_counter()
        samples = self.runner.run(now)
        self.cycle_cpu = time.perf_counter() - started  # wall: thread_time is a slow syscall here
        return samples

    def process(self, now: float, samples: list[Sample]) -> tuple[Metrics, list[AlertEvent]]:
        """Buffer, evaluate and frame one cycle's samples (cheap; runs on the loop)."""
        samples = samples + self._self_samples()
        if len(samples) > MAX_SAMPLES:
            if not self._truncation_logged:
                log.warning(
                    "%d samples in one cycle; only the first %d are kept (lower max_series "
                    "or watch fewer interfaces, mounts or certificates)",
                    len(samples),
                    MAX_SAMPLES,
                )
                self._truncation_logged = True
            samples = samples[:MAX_SAMPLES]
        self.buffer.append(now, samples)
        events = self.engine.evaluate(now, samples)
        frame = Metrics(
            self.seq, now, [WireSample(s.metric, dict(s.labels), float(s.value)) for s in samples]
        )
        self.seq += 1
        return frame, events

    def _self_samples(self) -> list[Sample]:
        return [
            Sample("agent_buffer_bytes", float(self.buffer.nbytes)),
            Sample("agent_outbox_events", float(len(self.outbox))),
            Sample("agent_privacy_refusals", float(self.gate.refusal_count)),
            Sample("agent_cycle_seconds", self.cycle_cpu),
        ]

    def publish(self, frame: Metrics, events: list[AlertEvent]) -> None:
        """Hand one cycle to the outside: the stream (gated there), or stdout standalone."""
        # The gate's traffic rule needs this cycle's peer count before any alert is gated.
        self.gate.observe(frame.samples)
        if self.exposition is not None:
            self.exposition.update(self.gate.filter_samples(frame.samples, field="exposition"))
        for event in events:
            self._log_event(event)
        if self.stream is not None:
            self.stream.send_metrics(frame)
            for event in events:
                self.stream.add_event(event)
        else:
            for event in events:
                gated = self.gate.filter(Alert(event=event))
                if gated is not None:
                    self.out.write(encode(gated) + "\n")
                    self.out.flush()

    def _log_event(self, event: AlertEvent) -> None:
        gated = self.gate.filter(Alert(event=event))
        if isinstance(gated, Alert):
            e = gated.event
            log.info("alert %s %s [%s]: %s", e.status, e.rule, e.severity, e.summary)

    # -- reloads ---------------------------------------------------------------------------
    def _set_rules(self, file_rules: RuleSet, pushed: RuleSet | None) -> None:
        self._file_rules = file_rules
        self._pushed_rules = pushed
        self.rules = file_rules if pushed is None else merge_rules(file_rules, pushed)
        self.engine.replace_rules(self.rules)

    def reload_rules(self) -> bool:
        """SIGHUP: reload the rules file (rules pushed by the server stay on top of it); on
        error keep the current rules."""
        try:
            rules = load_rules(self.settings.rules)
        except RulesError as exc:
            log.error("rules reload failed, keeping the current rules:\n%s", _first(exc))
            return False
        self._set_rules(rules, self._pushed_rules)
        log.info("rules reloaded: %d rules", len(self.rules.rules))
        return True

    def apply_config(self, config: Config) -> None:
        """A `config` message from the server: validated like local input, applied or refused."""
        if config.rules is not None:
            try:
                pushed = rules_from_dicts(
                    config.rules, source="server config", include_defaults=False
                )
            except RulesError as exc:
                log.error(
                    "server pushed invalid rules, keeping the current rules:\n%s", _first(exc)
                )
            else:
                self._set_rules(self._file_rules, pushed if pushed.rules else None)
                log.info(
                    "%d rules from the server applied over the local rules: %d rules",
                    len(pushed.rules),
                    len(self.rules.rules),
                )
        if config.interval is not None and config.interval != self.interval:
            log.info("interval set by the server: %.1fs", config.interval)
            self.interval = config.interval
            self._wake.set()

    # -- the process -----------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
        ):
            loop.add_signal_handler(sig, handler)
        notifier = self._notifier
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.exposition is not None:
                host, port = self.settings.listen_address() or ("127.0.0.1", 0)
                try:
                    self.metrics_port = await self.exposition.start(host, port)
                except OSError as exc:
                    log.error(
                        "metrics_listen %s:%d: cannot listen: %s",
                        host,
                        port,
                        exc.strerror or exc,
                    )
                    return EXIT_CONFIG
                log.info("prometheus exposition on %s:%d/metrics", host, self.metrics_port)
            if self.stream is not None:
                tasks.append(asyncio.create_task(self.stream.run(), name="stream"))
                log.info("streaming to %s", self.settings.server_url)
            else:
                log.info("no server_url: standalone, alert events are printed to stdout")
            log.info(
                "agent %s started: interval %.1fs, %d rules, buffer bound %d KiB",
                __version__,
                self.interval,
                len(self.rules.rules),
                self.buffer.bound_bytes // 1024,
            )
            notifier.notify("READY=1")
            await self._loop()
            notifier.notify("STOPPING=1")
            if self.stream is not None and len(self.outbox):
                log.info(
                    "draining %d unacked alert events (up to %.0fs)",
                    len(self.outbox),
                    DRAIN_SECONDS,
                )
                if not await self.stream.drain(DRAIN_SECONDS):
                    log.warning("%d alert events were not acked before exit", len(self.outbox))
        finally:
            if self.stream is not None:
                await self.stream.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.exposition is not None:
                await self.exposition.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("agent stopped")
        return 0

    async def _loop(self) -> None:
        """Cycle every interval. The systemd watchdog is fed from here, between and after
        cycles, so a collection stuck in the kernel (a hung mount) stops the pings and systemd
        restarts the agent; SIGHUP, SIGTERM and a new interval wake the wait at once."""
        notifier = self._notifier
        watchdog = notifier.watchdog_interval
        next_at = time.monotonic()
        while not self._stopping.is_set():
            if self._reload_requested:
                self._reload_requested = False
                self.reload_rules()
            now = self.clock()
            samples = await asyncio.to_thread(self.collect, now)
            frame, events = self.process(now, samples)
            self.publish(frame, events)
            if watchdog:
                notifier.notify("WATCHDOG=1")
            next_at += self.interval
            while not self._stopping.is_set() and not self._reload_requested:
                delay = next_at - time.monotonic()
                if delay <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(delay, watchdog or delay))
                if watchdog:
                    notifier.notify("WATCHDOG=1")
            if next_at < time.monotonic() - self.interval:
                next_at = time.monotonic()  # fell far behind (suspend): skip, don't burst


def _first(exc: RulesError) -> str:
    """At most SHOWN_ERRORS lines of a RulesError, so hostile input cannot flood the log."""
    lines = exc.errors[:SHOWN_ERRORS]
    if len(exc.errors) > SHOWN_ERRORS:
        lines.append(f"... and {len(exc.errors) - SHOWN_ERRORS} more errors")
    return "\n".join(lines)


async def check_once(agent: Agent, settle: float = 1.0) -> dict[str, object]:
    """`oneconnect-agent check`: what one cycle would send, after the privacy gate.

    Rates need two readings, so the collectors are read once, ``settle`` seconds pass, and the
    real cycle follows. Nothing is sent anywhere.
    """
    await asyncio.to_thread(agent.collect, agent.clock())
    await asyncio.sleep(settle)
    now = agent.clock()
    samples = await asyncio.to_thread(agent.collect, now)
    frame, events = agent.process(now, samples)
    messages: list[object] = []
    outgoing: list[Hello | Metrics | Alert] = [agent.hello(), frame]
    outgoing += [Alert(event=e) for e in events]
    for message in outgoing:
        gated = agent.gate.filter(message)
        if gated is not None:
            messages.append(json.loads(encode(gated)))
    return {
        "messages": messages,
        "privacy": {
            "refused": dict(agent.gate.refusals),
            "coarsened": agent.gate.coarsened,
            "withheld": agent.gate.withheld,
        },
        "buffer_bound_bytes": agent.buffer.bound_bytes,
    }
