"""bench/fanout: signed webhook deliveries through our delivery stack, beside a bare client.

Drives the real delivery stack in this process — ``server.webhooks.delivery.DeliveryEngine``
with the SSRF-safe ``WebhookClient`` (allow 127.0.0.0/8), ``formats.render``, Standard Webhooks
signing and ``retry.decide``, at the server's defaults (8 deliveries in flight per endpoint,
client pool 200 / 32 per host) — against a receiver in a separate process: a small aiohttp
app on 127.0.0.1, one port per endpoint (so each endpoint is its own host:port, as real ones
are), answering 204 and checking every ``VERIFY_EVERY``-th signature with the
``standardwebhooks`` library. This process's CPU (time.process_time, all threads) over the
run is therefore the delivery cost: what the server spends per delivery.

The deliveries are a burst: N/E alert events, each to all E endpoints, formats mixed across
the endpoints (generic, slack, discord, teams, pagerduty, alertmanager), started at once and
run to the end (each rendered once and signed on its attempt, as the server does).

Baseline, in the same run: a bare ``aiohttp.ClientSession`` posting the same bodies, rendered
beforehand, to the same receiver with the same concurrency (8 per endpoint), no signing, no
engine. Prints our rate as a ratio of the baseline's, and CPU per delivery beside it.

Target (issue 4): ≥ 2,000 signed deliveries/s on this machine, failures 0.

    python -m bench.fanout            # 10,000 deliveries to 10 endpoints
    python -m bench.fanout --quick    # 500 deliveries (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import aiohttp
from aiohttp import web

from agent.protocol import AlertEvent
from server.clock import SystemClock
from server.stats import Stats
from server.storage.webhooks import Filters, WebhookEndpoint
from server.webhooks.client import WebhookClient
from server.webhooks.delivery import DeliveryEngine, Outcome
from server.webhooks.formats import FORMATS, Format, Notice, render
from server.webhooks.signing import message_id, new_secret
from server.webhooks.ssrf import parse_networks

HOST: Final = "127.0.0.1"
TICK: Final = os.sysconf("SC_CLK_TCK")
TARGET_PER_SECOND: Final = 2000.0
TARGET_DELIVERIES: Final = 10_000
CONCURRENCY: Final = 8
"""Deliveries in flight per endpoint: the server's default (webhook_concurrency)."""
MAX_DELIVERIES: Final = 200_000
MAX_ENDPOINTS: Final = 50
"""The business plan's max_webhooks."""
VERIFY_EVERY: Final = 10
PHASE_TIMEOUT: Final = 120.0
"""A phase that has not finished by then is cut off; what is left counts as failures."""
RECEIVER_LIFETIME: Final = 900.0
"""The receiver exits after this long even if nobody tells it to."""
ROUTING_KEY: Final = "R0UT1NGKEY0123456789abcdefABCDEF"


class BenchError(Exception):
    """The run cannot go on (the receiver did not start, or answered nonsense)."""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU time spent by every process on this machine (user, nice, system; not irq and
    softirq time, which /proc/<pid>/stat does not charge to processes either)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system = (int(f) for f in fields[:3])
    return (user + nice + system) / TICK


# ------------------------------------------------------------------------------ the receiver


@dataclass
class Counts:
    hooks: int = 0
    bare: int = 0
    verified: int = 0
    bad_signatures: int = 0


async def serve_receiver() -> None:
    """The receiver process: reads its config (secrets, JSON) from the first stdin line,
    listens on one port per endpoint, prints them as JSON, and serves until stdin closes (the
    bench ended) or RECEIVER_LIFETIME passes."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    config = json.loads(await asyncio.wait_for(stdin.readline(), 30))
    secrets: list[str] = config["secrets"]
    verify_every = int(config["verify_every"])
    hooks = [Webhook(s) for s in secrets]
    counts = Counts()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        counts.hooks += 1
        if counts.hooks % verify_every == 0:
            n = int(request.match_info["n"])
            headers = {k.lower(): v for k, v in request.headers.items()}
            try:
                hooks[n].verify(body, headers, json_parse=False)
            except (WebhookVerificationError, ValueError, IndexError):
                counts.bad_signatures += 1
            else:
                counts.verified += 1
        return web.Response(status=204)

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        counts.bare += 1
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts.__dict__)

    app = web.Application()
    app.router.add_post("/hook/{n:[0-9]+}", hook)
    app.router.add_post("/bare/{n:[0-9]+}", bare)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None, handle_signals=True, shutdown_timeout=1.0)
    await runner.setup()
    ports = []
    for _ in secrets:
        site = web.TCPSite(runner, HOST, 0, backlog=1024)
        await site.start()
        ports.append(int(site._server.sockets[0].getsockname()[1]))  # type: ignore[union-attr]
    print(json.dumps({"ports": ports}), flush=True)
    try:
        await asyncio.wait_for(stdin.read(), RECEIVER_LIFETIME)  # b"" at EOF: the bench ended
    except TimeoutError:
        pass
    finally:
        await runner.cleanup()


class ReceiverProcess:
    def __init__(self, proc: asyncio.subprocess.Process, ports: list[int]) -> None:
        self.proc = proc
        self.ports = ports

    @classmethod
    async def start(cls, secrets: Sequence[str]) -> ReceiverProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.fanout",
            "--receiver",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        config = {"secrets": list(secrets), "verify_every": VERIFY_EVERY}
        proc.stdin.write(json.dumps(config).encode() + b"\n")  # secrets never on argv
        await proc.stdin.drain()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            ports = [int(p) for p in json.loads(line)["ports"]]
        except (TimeoutError, ValueError, KeyError) as exc:
            proc.kill()
            await proc.wait()
            raise BenchError(f"the receiver did not start ({exc.__class__.__name__})") from None
        return cls(proc, ports)

    async def counts(self, http: aiohttp.ClientSession) -> Counts:
        async with http.get(f"http://{HOST}:{self.ports[0]}/stats") as response:
            data = await response.json()
        return Counts(**data)

    async def stop(self) -> int:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            return await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()


# ------------------------------------------------------------------------------ the load


def make_endpoints(ports: Sequence[int], secrets: Sequence[str]) -> list[WebhookEndpoint]:
    now = time.time()
    endpoints = []
    for n, (port, secret) in enumerate(zip(ports, secrets, strict=True)):
        fmt = FORMATS[n % len(FORMATS)]
        endpoints.append(
            WebhookEndpoint(
                id=os.urandom(16).hex(),
                account_id="bench-account",
                name=f"bench-{n}-{fmt}",
                url=f"http://{HOST}:{port}/hook/{n}",
                format=fmt,
                enabled=True,
                disabled_reason=None,
                filters=Filters(),
                routing_key=ROUTING_KEY if fmt == "pagerduty" else None,
                secret=secret,
                previous_secret=None,
                previous_secret_until=None,
                created_at=now,
                updated_at=now,
            )
        )
    return endpoints


def make_event(n: int, now: float) -> AlertEvent:
    return AlertEvent(
        id=f"bench-{n:010d}",
        fingerprint=f"{n % 4096:016x}",
        rule="vpn_process_down",
        status="firing",
        severity="critical",
        metric="vpn_process_up",
        labels={"process": "openvpn"},
        value=0.0,
        threshold=1.0,
        summary="VPN daemon openvpn is down",
        started_at=now - 1.0,
        ts=now,
    )


@dataclass(frozen=True)
class Job:
    endpoint_index: int
    endpoint: WebhookEndpoint
    notice: Notice
    msg_id: str


def make_jobs(endpoints: Sequence[WebhookEndpoint], count: int, first: int) -> list[Job]:
    """``count`` deliveries: events ``first``, ``first + 1``, … each to every endpoint in turn."""
    now = time.time()
    jobs = []
    for i in range(count):
        e = i % len(endpoints)
        endpoint = endpoints[e]
        event = make_event(first + i // len(endpoints), now)
        notice = Notice(
            event=event,
            node_id="0123456789abcdef0123456789abcdef",
            node_name="vpn-fra-1",
            sent_at=now,
            endpoint_id=endpoint.id,
            endpoint_name=endpoint.name,
            routing_key=endpoint.routing_key,
            public_url="https://alerts.example.com",
        )
        jobs.append(Job(e, endpoint, notice, message_id(endpoint.id, event.id)))
    return jobs


def body_of(job: Job) -> bytes:
    """The body the engine renders for ``job``, rendered ahead for the baseline."""
    return render(cast(Format, job.endpoint.format), job.notice)


@dataclass
class Phase:
    deliveries: int
    seconds: float
    cpu_seconds: float
    receiver_cpu_seconds: float
    machine_cpu_seconds: float
    failures: int
    failure_reasons: dict[str, int]

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_seconds / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_us_per_delivery(self) -> float:
        return 1e6 * self.cpu_seconds / self.deliveries if self.deliveries else float("nan")

    def as_json(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_deliveries": self.deliveries,
            f"{prefix}_seconds": round(self.seconds, 3),
            f"{prefix}_per_second": round(self.per_second, 1),
            f"{prefix}_cpu_seconds": round(self.cpu_seconds, 3),
            f"{prefix}_cpu_percent": round(self.cpu_percent, 1),
            f"{prefix}_cpu_us_per_delivery": round(self.cpu_us_per_delivery, 1),
            f"{prefix}_receiver_cpu_percent": round(
                100 * self.receiver_cpu_seconds / self.seconds, 1
            ),
            f"{prefix}_other_cpu_percent": round(
                100
                * max(0.0, self.machine_cpu_seconds - self.cpu_seconds - self.receiver_cpu_seconds)
                / self.seconds,
                1,
            ),
            f"{prefix}_failures": self.failures,
            f"{prefix}_failure_reasons": self.failure_reasons,
        }


async def run_engine(engine: DeliveryEngine, jobs: Sequence[Job], receiver_pid: int) -> Phase:
    m0, r0 = machine_busy_seconds(), cpu_seconds(receiver_pid)
    c0, t0 = time.process_time(), time.perf_counter()
    tasks = [engine.deliver(j.endpoint, j.notice, j.msg_id) for j in jobs]
    done, pending = await asyncio.wait(tasks, timeout=PHASE_TIMEOUT)
    t1, c1 = time.perf_counter(), time.process_time()
    r1, m1 = cpu_seconds(receiver_pid), machine_busy_seconds()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    reasons: dict[str, int] = {}
    delivered = 0
    for task in done:
        error = task.exception()
        if error is not None:  # a bug in the stack: counted and named, not a crash
            why = f"raised {error.__class__.__name__}: {error}"[:200]
            reasons[why] = reasons.get(why, 0) + 1
            continue
        outcome: Outcome = task.result()
        if outcome.delivered:
            delivered += 1
        else:
            reasons[outcome.reason] = reasons.get(outcome.reason, 0) + 1
    if pending:
        reasons[f"not done within {PHASE_TIMEOUT:g} s"] = len(pending)
    return Phase(delivered, t1 - t0, c1 - c0, r1 - r0, m1 - m0, len(jobs) - delivered, reasons)


async def run_bare(
    session: aiohttp.ClientSession,
    jobs: Sequence[Job],
    bodies: Sequence[bytes],
    endpoints: int,
    receiver_pid: int,
) -> Phase:
    """The same bodies, the same receiver, the same concurrency: a bare client, nothing else."""
    slots = [asyncio.Semaphore(CONCURRENCY) for _ in range(endpoints)]
    headers = {"content-type": "application/json"}

    async def post(job: Job, body: bytes) -> bool:
        async with slots[job.endpoint_index]:
            url = job.endpoint.url.replace("/hook/", "/bare/")
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return 200 <= response.status < 300
            except (aiohttp.ClientError, OSError, TimeoutError):
                return False

    m0, r0 = machine_busy_seconds(), cpu_seconds(receiver_pid)
    c0, t0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.ensure_future(post(j, b)) for j, b in zip(jobs, bodies, strict=True)]
    done, pending = await asyncio.wait(tasks, timeout=PHASE_TIMEOUT)
    t1, c1 = time.perf_counter(), time.process_time()
    r1, m1 = cpu_seconds(receiver_pid), machine_busy_seconds()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    ok = sum(1 for task in done if task.result())
    reasons = {"failed": len(done) - ok} if len(done) > ok else {}
    if pending:
        reasons[f"not done within {PHASE_TIMEOUT:g} s"] = len(pending)
    return Phase(ok, t1 - t0, c1 - c0, r1 - r0, m1 - m0, len(jobs) - ok, reasons)


async def measure(deliveries: int, endpoints_n: int) -> dict[str, Any]:
    secrets = [new_secret() for _ in range(endpoints_n)]
    receiver = await ReceiverProcess.start(secrets)
    result: dict[str, Any] = {"deliveries": deliveries, "endpoints": endpoints_n}
    result["load_average_at_start"] = round(os.getloadavg()[0], 2)
    result["cpus"] = os.cpu_count()
    async with aiohttp.ClientSession() as control:
        try:
            endpoints = make_endpoints(receiver.ports, secrets)
            result["formats"] = sorted({e.format for e in endpoints})

            async def disable(endpoint: WebhookEndpoint, reason: str) -> None:
                result.setdefault("disabled", []).append(f"{endpoint.name}: {reason}")

            client = WebhookClient(allow=parse_networks(["127.0.0.0/8"]))
            engine = DeliveryEngine(
                client,
                stats=Stats(),
                clock=SystemClock(),
                disable=disable,
                concurrency=CONCURRENCY,
            )
            bare = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200, limit_per_host=32)
            )
            try:
                # Warm-up: connections opened, code paths and caches warm, for both clients.
                warm = make_jobs(endpoints, 4 * CONCURRENCY * endpoints_n, first=0)
                warm_engine = await run_engine(engine, warm, receiver.proc.pid)
                warm_bodies = [body_of(j) for j in warm]
                warm_bare = await run_bare(bare, warm, warm_bodies, endpoints_n, receiver.proc.pid)
                if warm_engine.failures or warm_bare.failures:
                    raise BenchError(
                        f"warm-up failed: engine {warm_engine.failure_reasons}, "
                        f"baseline {warm_bare.failure_reasons}"
                    )
                before = await receiver.counts(control)
                jobs = make_jobs(endpoints, deliveries, first=len(warm))
                bodies = [body_of(j) for j in jobs]
                result["mean_body_bytes"] = round(sum(map(len, bodies)) / len(bodies))
                baseline = await run_bare(bare, jobs, bodies, endpoints_n, receiver.proc.pid)
                ours = await run_engine(engine, jobs, receiver.proc.pid)
                after = await receiver.counts(control)
            finally:
                await bare.close()
                await engine.close()
        finally:
            result["receiver_exit_code"] = await receiver.stop()
    result.update(ours.as_json("engine"))
    result.update(baseline.as_json("baseline"))
    result["receiver_got"] = after.hooks - before.hooks
    result["receiver_got_baseline"] = after.bare - before.bare
    result["signatures_verified"] = after.verified - before.verified
    result["bad_signatures"] = after.bad_signatures
    result["rate_ratio_vs_baseline"] = round(ours.per_second / baseline.per_second, 3)
    result["cpu_ratio_vs_baseline"] = round(
        ours.cpu_us_per_delivery / baseline.cpu_us_per_delivery, 3
    )
    result["target_met"] = bool(
        deliveries >= TARGET_DELIVERIES
        and ours.per_second >= TARGET_PER_SECOND
        and ours.failures == 0
    )
    return result


def machine_line(r: dict[str, Any]) -> str:
    line = (
        f"  machine          {r['cpus']} CPUs, load average {r['load_average_at_start']:g} at start"
    )
    other = max(r["engine_other_cpu_percent"], r["baseline_other_cpu_percent"])
    if other > 25:
        line += f"; other processes took up to {other:.0f} % of a core: figures are low and noisy"
    return line


def report(r: dict[str, Any]) -> None:
    print(
        f"fanout ({r['deliveries']} deliveries to {r['endpoints']} endpoints on one loopback "
        f"receiver process, {CONCURRENCY} in flight per endpoint, formats "
        f"{'/'.join(r['formats'])}, mean body {r['mean_body_bytes']} B)"
    )
    for name, label in (("engine", "ours (signed)"), ("baseline", "baseline (bare)")):
        print(
            f"  {label:<17}{r[f'{name}_deliveries']} delivered in {r[f'{name}_seconds']:.2f} s"
            f" = {r[f'{name}_per_second']:.0f}/s | server CPU {r[f'{name}_cpu_seconds']:.2f} s = "
            f"{r[f'{name}_cpu_percent']:.0f} % of one core, "
            f"{r[f'{name}_cpu_us_per_delivery']:.0f} µs per delivery | "
            f"failures {r[f'{name}_failures']} | receiver CPU "
            f"{r[f'{name}_receiver_cpu_percent']:.0f} % | other processes "
            f"{r[f'{name}_other_cpu_percent']:.0f} %"
        )
    print(
        f"  ratio            rate {r['rate_ratio_vs_baseline']:.2f} of the baseline's | "
        f"CPU per delivery {r['cpu_ratio_vs_baseline']:.2f}× the baseline's"
    )
    print(
        f"  receiver         got {r['receiver_got']} signed + {r['receiver_got_baseline']} bare "
        f"| signatures verified {r['signatures_verified']} (every {VERIFY_EVERY}th), "
        f"bad {r['bad_signatures']}"
    )
    if r["deliveries"] >= TARGET_DELIVERIES:
        verdict = "yes" if r["target_met"] else "NO"
    else:
        verdict = f"n/a (the target is for {TARGET_DELIVERIES:,} deliveries)"
    print(f"  target ≥ {TARGET_PER_SECOND:,.0f}/s  {verdict}")
    print(machine_line(r))
    failures = {**r["engine_failure_reasons"], **r["baseline_failure_reasons"]}
    if failures:
        print(f"  failure reasons  {failures}")
    print(json.dumps(r))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 deliveries (CI)")
    parser.add_argument("--deliveries", type=int, default=None, help=f"N (1..{MAX_DELIVERIES})")
    parser.add_argument("--endpoints", type=int, default=10, help=f"E (1..{MAX_ENDPOINTS})")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        asyncio.run(serve_receiver())
        return 0
    deliveries = args.deliveries or (500 if args.quick else TARGET_DELIVERIES)
    if not 1 <= deliveries <= MAX_DELIVERIES or not 1 <= args.endpoints <= MAX_ENDPOINTS:
        parser.error(f"--deliveries must be 1..{MAX_DELIVERIES}, --endpoints 1..{MAX_ENDPOINTS}")
    try:
        r = asyncio.run(measure(deliveries, args.endpoints))
    except BenchError as exc:
        print(f"bench.fanout: {exc}", file=sys.stderr)
        return 1
    report(r)
    broken = (
        r["engine_failures"]
        or r["baseline_failures"]
        or r["bad_signatures"]
        or r["receiver_got"] != r["engine_deliveries"]
        or r["signatures_verified"] == 0
    )
    if broken:
        print("the run was broken (failures, bad signatures or lost requests)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
