"""bench/ingest: the real server ingesting N simulated agents, beside an idle baseline.

Starts `oneconnect-server run` as a subprocess on 127.0.0.1 (SQLite in a temporary data dir,
start grace 3600 s so no node_down noise), registers business-plan accounts (1,000 nodes each)
and N nodes over the HTTP API, then connects N raw websockets to /api/v1/agent/stream. Each
simulated agent sends a hello (interval 1 s), then:

* first frames: every agent sends its first metrics frame within the same second (what a fleet
  does when the server restarts); each creates the node's series, and the bench times how long
  the server takes to have counted them all;
* baseline (idle): one ping per 10 s, nothing else, for a short window;
* load: one metrics frame per second with one sample per known metric (agent.metrics.METRICS,
  ~50 samples, realistic values); every 10th frame is followed at once by a ping, and the time
  from sending that metrics frame to the ping reply is the ingest latency (the server handles
  an agent's messages in order, so the reply comes after the metrics frame was taken in).
  The target counts every load ping.

Frames are written from pre-encoded sample lists (checked, byte for byte, against the models'
JSON at start), so the bench's own CPU goes to sockets, not to encoding; and the bench's own
garbage collector is frozen and off while it measures (with 5,000 sockets its pauses reached
0.4 s and counted as server latency).

Prints frames/s sent and frames/s the server counted (``agent_frames_total{type="metrics"}``
from GET /metrics), ping round trip p50/p99, the server's CPU (% of one core, utime+stime from
/proc/<pid>/stat over each window) and RSS (VmRSS, and the peak VmHWM), idle beside loaded,
with their ratio. The bench process shares the machine's cores with the server; over the load
window it also prints the server's CPU time per metrics frame, its own CPU and what every other
process on the machine used (from /proc/stat), since a busy neighbour starves the server.

Target (issue #3): 5,000 agents at 1 frame/s with ping p99 < 100 ms and server RSS < 1 GiB.

    python -m bench.ingest            # N=5000: first frames, 10 s idle, then 30 s load
    python -m bench.ingest --quick    # N=50: 3 s idle, then 5 s load (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import math
import os
import random
import re
import resource
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from agent.metrics import METRICS
from agent.protocol import STREAM_PATH, Hello, Metrics, Ping, WireSample, dumps

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
NODES_PER_ACCOUNT = 1000  # the business plan's max_nodes
MAX_AGENTS = 10_000  # registrations allow a burst of 10 accounts per client
FD_MARGIN = 256
IDLE_PING_EVERY = 10.0
PING_EVERY_FRAMES = 10
PING_TIMEOUT = 10.0
TARGET_P99_MS = 100.0
FIRST_FRAMES_TIMEOUT = 120.0
LAG_TICK = 0.01
TARGET_RSS_MIB = 1024.0
LABEL_VALUES = {
    "interface": "eth0",
    "mount": "/",
    "process": "wireguard",
    "port": "udp/51820",
    "cert": "vpn-example",
    "resource": "cpu",
    "family": "ipv4",
    "source": "wireguard",
    "collector": "cpu",
}
FRAMES_RE = re.compile(
    r'^oneconnect_server_agent_frames_total\{type="metrics"\} ([0-9.e+]+)$', re.MULTILINE
)


class BenchError(Exception):
    """The run cannot go on (server did not start, a request failed, not enough fds)."""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far, all cores (from /proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # less idle and iowait


def status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raise_fd_limit(agents: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    # The bench and the server (which inherits this limit) each hold one socket per agent.
    needed = agents + FD_MARGIN
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise BenchError(
            f"{agents} agents need about {needed} open files per process, but RLIMIT_NOFILE "
            f"allows {soft} (hard limit {hard}); raise it (ulimit -n) or use fewer --agents"
        )
    return int(soft)


def read_tail(path: Path, chars: int) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def sample_value(unit: str, rng: random.Random) -> float:
    if unit in ("percent",):
        return round(rng.uniform(0, 100), 2)
    if unit == "ratio":
        return round(rng.random(), 3)
    if unit == "bytes":
        return float(rng.randint(1_000_000, 16_000_000_000))
    if unit == "bytes_per_second":
        return round(rng.uniform(0, 125_000_000), 1)
    if unit == "per_second":
        return round(rng.uniform(0, 5), 2)
    if unit == "count":
        return float(rng.randint(0, 500))
    if unit == "seconds":
        return round(rng.uniform(0, 100_000), 3)
    if unit == "days":
        return float(rng.randint(1, 365))
    if unit == "bool":
        return 1.0
    return round(rng.uniform(0, 4), 2)  # load


class FramePool:
    """Metrics and ping frames written from pre-encoded samples: the models' exact JSON."""

    def __init__(self, pool: list[list[WireSample]]) -> None:
        self.samples = [self._samples_json(samples) for samples in pool]
        for i, samples in enumerate(pool[:2]):  # the shortcut must write what dumps writes
            ts = time.time()
            if self.metrics(i, ts) != dumps(Metrics(seq=i, ts=ts, samples=samples)):
                raise BenchError("pre-encoded metrics frame differs from the models' JSON")
            if self.ping(ts) != dumps(Ping(ts=ts)):
                raise BenchError("pre-encoded ping differs from the models' JSON")

    @staticmethod
    def _samples_json(samples: list[WireSample]) -> str:
        whole = dumps(Metrics(seq=0, ts=0.0, samples=samples))
        head = '{"v":1,"type":"metrics","seq":0,"ts":0.0,"samples":'
        if not whole.startswith(head) or not whole.endswith("}"):
            raise BenchError("unexpected metrics JSON from the models")
        return whole[len(head) : -1]

    def metrics(self, seq: int, ts: float) -> str:
        samples = self.samples[seq % len(self.samples)]
        return f'{{"v":1,"type":"metrics","seq":{seq},"ts":{ts!r},"samples":{samples}}}'

    @staticmethod
    def ping(ts: float) -> str:
        return f'{{"v":1,"type":"ping","ts":{ts!r},"reply":false}}'


def sample_pool(size: int, rng: random.Random) -> list[list[WireSample]]:
    """A few validated sample lists; frames pick from them (the bench must not be the limit)."""
    return [
        [
            WireSample(
                m=d.name,
                l={label: LABEL_VALUES[label] for label in d.labels},
                v=sample_value(d.unit, rng),
            )
            for d in METRICS.values()
        ]
        for _ in range(size)
    ]


@dataclass
class Tally:
    frames_sent: int = 0
    idle_pings: list[float] = field(default_factory=list)
    load_pings: list[float] = field(default_factory=list)
    slow_ping_seconds: list[int] = field(default_factory=list)
    """For each load ping over the target: the second of the load window it was sent in."""
    lost_pings: int = 0
    send_errors: int = 0
    closed_early: int = 0


class Agent:
    """One simulated agent: a websocket, a reader task answering nothing but catching replies."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.waiting: asyncio.Future[float] | None = None
        self.reader = asyncio.create_task(self._read())
        self.closed_by_server = False

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for msg in self.ws:  # aiohttp answers the server's heartbeat pings itself
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            waiting = self.waiting
            if data.get("type") == "ping" and data.get("reply") and waiting and not waiting.done():
                waiting.set_result(loop.time())
        self.closed_by_server = True

    async def round_trip(self, first: str | None = None) -> float | None:
        """Send ``first`` (if any) then a ping; seconds from the first send to the reply."""
        loop = asyncio.get_running_loop()
        self.waiting = loop.create_future()
        started = loop.time()
        if first is not None:
            await self.ws.send_str(first)
        await self.ws.send_str(FramePool.ping(time.time()))
        try:
            replied = await asyncio.wait_for(self.waiting, PING_TIMEOUT)
        except TimeoutError:
            return None
        return replied - started


async def start_server(port: int, data_dir: Path, log_path: Path) -> asyncio.subprocess.Process:
    env = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith("ONECONNECT_")},
        "PYTHONDONTWRITEBYTECODE": "1",
        "ONECONNECT_SERVER_LISTEN": f"127.0.0.1:{port}",
        "ONECONNECT_SERVER_DATA_DIR": str(data_dir),
        "ONECONNECT_SERVER_START_GRACE_SECONDS": "3600",
        "ONECONNECT_SERVER_LOG_LEVEL": "warning",
    }
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            "run",
            env=env,
            stdout=log,
            stderr=log,
            cwd=str(REPO),
        )


async def wait_ready(
    http: aiohttp.ClientSession, server: asyncio.subprocess.Process, log_path: Path
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.returncode is not None:
            tail = read_tail(log_path, 1500)
            raise BenchError(f"the server exited at start-up ({server.returncode}):\n{tail}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get("/readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise BenchError("the server was not ready within 30 s")


async def post(
    http: aiohttp.ClientSession, path: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    async with http.post(path, json=body, headers=headers) as response:
        data: dict[str, Any] = await response.json()
        if response.status != 201:
            raise BenchError(f"POST {path}: {response.status} {str(data)[:200]}")
        return data


async def create_tokens(http: aiohttp.ClientSession, agents: int) -> list[str]:
    keys = []
    for n in range(math.ceil(agents / NODES_PER_ACCOUNT)):
        body = {
            "name": "Bench Mark",
            "email": f"bench-{n}-{os.urandom(4).hex()}@example.com",
            "password": "correct horse battery staple",
            "plan": "business",
        }
        keys.append((await post(http, "/api/v1/accounts", body, {}))["api_key"])
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        headers = {"Authorization": f"Bearer {keys[i // NODES_PER_ACCOUNT]}"}
        async with gate:
            data = await post(http, "/api/v1/nodes", {"name": f"vpn-{i}"}, headers)
        return str(data["token"])

    return await asyncio.gather(*(one(i) for i in range(agents)))


async def connect_all(http: aiohttp.ClientSession, tokens: list[str]) -> list[Agent]:
    gate = asyncio.Semaphore(64)
    hello = dumps(Hello(agent_version="bench", interval=1, metrics=list(METRICS), buffer_seconds=0))

    async def one(token: str) -> Agent:
        async with gate:
            ws = await http.ws_connect(
                STREAM_PATH,
                headers={"Authorization": f"Bearer {token}"},
                autoping=True,
                max_msg_size=64 * 1024,
            )
            await ws.send_str(hello)
        return Agent(ws)

    results = await asyncio.gather(*(one(t) for t in tokens), return_exceptions=True)
    agents = [r for r in results if isinstance(r, Agent)]
    failed = [r for r in results if not isinstance(r, Agent)]
    if failed:
        for agent in agents:
            await agent.ws.close()
        raise BenchError(f"{len(failed)} of {len(tokens)} agents could not connect: {failed[0]!r}")
    return agents


async def server_frames(http: aiohttp.ClientSession) -> float:
    async with http.get("/metrics") as response:
        text = await response.text()
    found = FRAMES_RE.search(text)
    return float(found.group(1)) if found else 0.0


async def run_idle(agent: Agent, until: float, rng: random.Random, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time() + rng.uniform(0, IDLE_PING_EVERY)
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        took = await agent.round_trip()
        if took is None:
            tally.lost_pings += 1
        else:
            tally.idle_pings.append(took)
        next_at += IDLE_PING_EVERY


async def run_load(
    agent: Agent,
    start: float,
    until: float,
    pool: FramePool,
    rng: random.Random,
    tally: Tally,
) -> None:
    loop = asyncio.get_running_loop()
    next_at = start + rng.uniform(0, 1)
    seq = rng.randrange(len(pool.samples))
    while next_at < until:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        seq += 1
        frame = pool.metrics(seq, time.time())
        if seq % PING_EVERY_FRAMES == 0:
            sent = loop.time()
            took = await agent.round_trip(frame)
            if took is None:
                tally.lost_pings += 1
            else:
                tally.load_pings.append(took)
                if took * 1000 >= TARGET_P99_MS:
                    tally.slow_ping_seconds.append(int(sent - start))
        else:
            await agent.ws.send_str(frame)
        tally.frames_sent += 1
        next_at += 1.0


async def loop_lag(until: float, lags: list[float]) -> None:
    """The bench's own event-loop delay until ``until``: a round trip the bench reads late is
    late by this much whatever the server did."""
    loop = asyncio.get_running_loop()
    while (start := loop.time()) < until:
        await asyncio.sleep(LAG_TICK)
        lags.append(loop.time() - start - LAG_TICK)


def python_speed_ms() -> float:
    """Milliseconds for a fixed pure-Python loop: this machine's speed now (runs on different
    days, or a busy host, compare through it)."""
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return 1000 * best


async def send_first(agent: Agent, at: float, pool: FramePool, seq: int, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, at - loop.time()))
    try:
        await agent.ws.send_str(pool.metrics(seq, time.time()))
    except (aiohttp.ClientError, ConnectionError, RuntimeError):
        tally.send_errors += 1


async def first_frames(
    http: aiohttp.ClientSession, agents: list[Agent], pool: FramePool, tally: Tally
) -> float:
    """Every agent's first metrics frame within one second; seconds until the server counted
    them all."""
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    f0 = await server_frames(http)
    start = loop.time()
    await asyncio.gather(
        *(send_first(a, start + rng.random(), pool, i, tally) for i, a in enumerate(agents))
    )
    while await server_frames(http) < f0 + len(agents):
        if loop.time() - start > FIRST_FRAMES_TIMEOUT:
            raise BenchError(
                f"the server had not taken the first frames in {FIRST_FRAMES_TIMEOUT:g} s"
            )
        await asyncio.sleep(0.05)
    return loop.time() - start


async def simulate(
    agent: Agent, plan: dict[str, float], pool: FramePool, seed: int, tally: Tally
) -> None:
    rng = random.Random(seed)
    try:
        await run_idle(agent, plan["idle_end"], rng, tally)
        # Straight on: run_load sleeps until this agent's own first instant of the load. A
        # sleep until idle_end first would wake all N agents in one instant, and the bench's
        # loop, busy with N wake-ups, would read the first second's round trips late.
        await run_load(agent, plan["idle_end"], plan["load_end"], pool, rng, tally)
    except (aiohttp.ClientError, ConnectionError, RuntimeError):
        tally.send_errors += 1


async def measure(agents_n: int, idle_s: float, load_s: float) -> dict[str, Any]:
    port = free_port()
    tally = Tally()
    result: dict[str, Any] = {"agents": agents_n, "idle_seconds": idle_s, "load_seconds": load_s}
    with tempfile.TemporaryDirectory(prefix="oc-bench-ingest-") as tmp:
        log_path = Path(tmp) / "server.log"
        server = await start_server(port, Path(tmp), log_path)
        pid = server.pid
        connector = aiohttp.TCPConnector(limit=0)
        http = aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{port}",
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=60),
        )
        agents: list[Agent] = []
        try:
            await wait_ready(http, server, log_path)
            t = time.monotonic()
            tokens = await create_tokens(http, agents_n)
            result["setup_nodes_seconds"] = round(time.monotonic() - t, 1)
            t = time.monotonic()
            agents = await connect_all(http, tokens)
            result["setup_connect_seconds"] = round(time.monotonic() - t, 1)
            await asyncio.sleep(1.0)  # hellos (and first-connection enrolment writes) settle
            samples = sample_pool(16, random.Random(1))
            pool = FramePool(samples)
            result["samples_per_frame"] = len(samples[0])
            result["frame_bytes"] = len(pool.metrics(1, time.time()))
            gc.collect()
            gc.freeze()
            gc.disable()
            result["first_frames_seconds"] = await first_frames(http, agents, pool, tally)
            loop = asyncio.get_running_loop()
            now = loop.time()
            plan = {"idle_end": now + idle_s, "load_end": now + idle_s + load_s}
            tasks = [
                asyncio.create_task(simulate(a, plan, pool, i, tally)) for i, a in enumerate(agents)
            ]
            c0, w0 = cpu_seconds(pid), loop.time()
            await asyncio.sleep(max(0.0, plan["idle_end"] - loop.time()))
            c1, w1 = cpu_seconds(pid), loop.time()
            m1, b1 = machine_busy_seconds(), cpu_seconds(os.getpid())
            result["idle_rss_mib"] = status_mib(pid, "VmRSS")
            result["idle_peak_rss_mib"] = status_mib(pid, "VmHWM")
            f0 = await server_frames(http)
            lags: list[float] = []
            await loop_lag(plan["load_end"], lags)
            c2, w2 = cpu_seconds(pid), loop.time()
            m2, b2 = machine_busy_seconds(), cpu_seconds(os.getpid())
            result["load_rss_mib"] = status_mib(pid, "VmRSS")
            _done, pending = await asyncio.wait(tasks, timeout=PING_TIMEOUT + 5)
            for task in pending:
                task.cancel()
            result["agents_overran"] = len(pending)
            await asyncio.sleep(1.0)  # let the server drain what is in flight
            f1 = await server_frames(http)
            result["peak_rss_mib"] = status_mib(pid, "VmHWM")
            result["server_metrics_frames"] = int(f1 - f0)
            result["idle_cpu_percent"] = 100 * (c1 - c0) / (w1 - w0)
            result["load_cpu_percent"] = 100 * (c2 - c1) / (w2 - w1)
            result["server_cpu_us_per_frame"] = 1e6 * (c2 - c1) / max(1, f1 - f0)
            result["bench_cpu_percent"] = 100 * (b2 - b1) / (w2 - w1)
            busy = 100 * (m2 - m1) / (w2 - w1)
            result["machine_cores"] = os.cpu_count()
            result["bench_lag_p99_ms"] = 1000 * percentile(lags, 0.99)
            result["bench_lag_max_ms"] = 1000 * max(lags, default=float("nan"))
            result["machine_busy_percent"] = busy
            result["others_cpu_percent"] = (
                busy - result["load_cpu_percent"] - result["bench_cpu_percent"]
            )
            result["measured_load_seconds"] = round(w2 - w1, 2)
        finally:
            gc.enable()
            gc.unfreeze()
            tally.closed_early = sum(a.closed_by_server for a in agents)
            await asyncio.gather(*(a.ws.close() for a in agents), return_exceptions=True)
            for a in agents:
                a.reader.cancel()
            await http.close()
            if server.returncode is None:
                server.send_signal(signal.SIGINT)
            try:
                result["server_exit_code"] = await asyncio.wait_for(server.wait(), 30)
            except TimeoutError:
                server.kill()
                result["server_exit_code"] = await server.wait()
            log_tail = read_tail(log_path, 2000)
    result.update(
        frames_sent=tally.frames_sent,
        frames_per_second=tally.frames_sent / load_s,
        server_frames_per_second=result["server_metrics_frames"] / load_s,
        load_pings=len(tally.load_pings),
        idle_pings=len(tally.idle_pings),
        lost_pings=tally.lost_pings,
        send_errors=tally.send_errors,
        closed_by_server=tally.closed_early,
        idle_ping_p50_ms=1000 * percentile(tally.idle_pings, 0.5),
        idle_ping_p99_ms=1000 * percentile(tally.idle_pings, 0.99),
        load_ping_p50_ms=1000 * percentile(tally.load_pings, 0.5),
        load_ping_p99_ms=1000 * percentile(tally.load_pings, 0.99),
        load_ping_max_ms=1000 * max(tally.load_pings, default=float("nan")),
        load_ping_p90_ms=1000 * percentile(tally.load_pings, 0.90),
        load_ping_p999_ms=1000 * percentile(tally.load_pings, 0.999),
        slow_pings_by_second=dict(sorted(collections.Counter(tally.slow_ping_seconds).items())),
    )
    result["server_log_warnings"] = sum(
        1 for line in log_tail.splitlines() if "WARNING" in line or "ERROR" in line
    )
    result["_log_tail"] = log_tail
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=50, 3 s idle + 5 s load (CI)")
    parser.add_argument("--agents", type=int, default=None, help=f"N (1..{MAX_AGENTS})")
    parser.add_argument("--seconds", type=float, default=None, help="load window (1..600 s)")
    args = parser.parse_args()
    agents = args.agents or (50 if args.quick else 5000)
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    idle = 3.0 if args.quick else 10.0
    if not 1 <= agents <= MAX_AGENTS or not 1 <= seconds <= 600:
        parser.error(f"--agents must be 1..{MAX_AGENTS} and --seconds 1..600")
    speed = python_speed_ms()
    try:
        fd_limit = raise_fd_limit(agents)
        r = asyncio.run(measure(agents, idle, seconds))
    except BenchError as exc:
        print(f"bench.ingest: {exc}", file=sys.stderr)
        return 1
    r["fd_limit"] = fd_limit
    r["python_loop_ms"] = speed
    tick_percent = 100 / TICK / idle
    r["cpu_ratio_vs_idle"] = r["load_cpu_percent"] / max(r["idle_cpu_percent"], tick_percent)
    r["rss_ratio_vs_idle"] = r["load_rss_mib"] / r["idle_rss_mib"]
    r["target_met"] = bool(
        agents >= 5000
        and r["load_ping_p99_ms"] < TARGET_P99_MS
        and r["peak_rss_mib"] < TARGET_RSS_MIB
        and r["server_metrics_frames"] >= 0.99 * r["frames_sent"]
        and r["frames_per_second"] >= 0.95 * agents
    )
    log_tail = r.pop("_log_tail")
    print(f"ingest ({agents} agents, {r['samples_per_frame']} samples/frame, {r['frame_bytes']} B)")
    print(
        f"  setup              {r['setup_nodes_seconds']} s accounts+nodes | "
        f"{r['setup_connect_seconds']} s connect"
    )
    print(
        f"  frames             sent {r['frames_per_second']:.0f}/s | server counted "
        f"{r['server_frames_per_second']:.0f}/s ({r['server_metrics_frames']} of "
        f"{r['frames_sent']}) over {seconds:g} s | target {agents}/s"
    )
    print(
        f"  ping round trip    load p50 {r['load_ping_p50_ms']:.1f} ms | "
        f"p99 {r['load_ping_p99_ms']:.1f} ms | max {r['load_ping_max_ms']:.1f} ms "
        f"({r['load_pings']} pings) | idle p50 {r['idle_ping_p50_ms']:.1f} ms "
        f"({r['idle_pings']}) | target p99 < {TARGET_P99_MS:g} ms"
    )
    slow = r["slow_pings_by_second"]
    print(
        f"  slow pings         {sum(slow.values())} at ≥ {TARGET_P99_MS:g} ms, sent in second(s) "
        f"{', '.join(f'{k} ({v})' for k, v in slow.items()) or '-'} of the load | p90 "
        f"{r['load_ping_p90_ms']:.1f} ms | p99.9 {r['load_ping_p999_ms']:.1f} ms"
    )
    print(
        f"  bench              its own loop lag p99 {r['bench_lag_p99_ms']:.1f} ms, max "
        f"{r['bench_lag_max_ms']:.1f} ms over the load (in every round trip) | 10^6-step "
        f"Python loop {r['python_loop_ms']:.0f} ms (speed)"
    )
    print(
        f"  first frames       {agents} in {r['first_frames_seconds']:.1f} s (sent within 1 s; "
        "each creates its node's series)"
    )
    print(
        f"  server CPU         load {r['load_cpu_percent']:.1f} % of one core | "
        f"idle {r['idle_cpu_percent']:.1f} % | ratio {r['cpu_ratio_vs_idle']:.1f} "
        "(idle floored at one clock tick)"
    )
    print(
        f"  machine CPU        load window: server {r['server_cpu_us_per_frame']:.0f} µs per "
        f"metrics frame | bench {r['bench_cpu_percent']:.1f} % | other processes "
        f"{r['others_cpu_percent']:.1f} % | busy {r['machine_busy_percent']:.0f} % of "
        f"{100 * (r['machine_cores'] or 1)} %"
    )
    print(
        f"  server RSS         load {r['load_rss_mib']:.1f} MiB | idle {r['idle_rss_mib']:.1f} MiB"
        f" | ratio {r['rss_ratio_vs_idle']:.2f} | peak {r['peak_rss_mib']:.1f} MiB | "
        f"target < {TARGET_RSS_MIB:g} MiB"
    )
    print(
        f"  problems           lost pings {r['lost_pings']} | send errors {r['send_errors']} | "
        f"closed by server {r['closed_by_server']} | overran {r['agents_overran']} | "
        f"server log warnings {r['server_log_warnings']}"
    )
    if agents >= 5000:
        print(f"  target met         {'yes' if r['target_met'] else 'NO'}")
    else:
        print("  target met         n/a (the target is for 5,000 agents)")
    print(json.dumps(r))
    broken = (
        r["server_exit_code"] != 0
        or r["frames_sent"] == 0
        or r["load_pings"] == 0
        or r["send_errors"]
        or r["closed_by_server"]
    )
    if broken:
        print("the run was broken; server log tail:", file=sys.stderr)
        print(log_tail, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
