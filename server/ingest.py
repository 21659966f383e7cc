"""The agents' websocket (◆ ``GET /api/v1/agent/stream``, ARCHITECTURE.md §5 and §6).

Handshake: ``Authorization: Bearer <node token>``. A missing, unknown or rotated token is a
401 JSON error before any upgrade; failed attempts are rate-limited per client (the peer
address, held in memory only and never logged, like the token).

Per connection (messages parsed by :func:`agent.protocol.parse_agent_frame`, nothing else: the
checks of ``parse_agent_message``, metrics samples as plain validated data; once a metrics frame
has passed, the connection learns its :class:`server.shapes.FrameShape` and reads the next ones
by it while they keep it: the same contents, proven so, in a fraction of the time):
``hello`` must come first (within ``HELLO_TIMEOUT``); the server stores it in live state, marks
the node enrolled on its first connection and, when the agent's interval is below the plan's
minimum, answers ``config`` with ``interval = min_interval``. The hello's ``firing`` alerts
(acked before, so never resent) go to :meth:`Dispatcher.resync` before the next message is
read: a server that restarted learns them without delivering anything, a server that knows them
changes nothing. Entries are ignored (counted in ``alert_events_resync_ignored``) when their
``ts`` or ``started_at`` is more than ``RESYNC_SKEW`` ahead of the server's clock, or when they
name the server's own ``node_down`` alert (its rule, or the node's node_down fingerprint).
Everything is keyed by this connection's node, so a hello can only touch its own node.

Then ``metrics`` go to live state, each ``alert`` goes through :meth:`Dispatcher.start` and is
acked once its deliveries settled (a duplicate id is acked too; the stream is not held up
meanwhile), a ``ping`` gets a ``ping`` with ``reply`` true.

Close codes (each closing is logged with the node id and a reason, never a frame's content):

====  =========================================================================================
1008  policy violation: not JSON, wrong ``v``, unknown type, invalid fields, binary frame,
      no hello first, a second hello, too many messages (``FRAME_BURST`` / ``FRAME_RATE``);
      also "node token revoked" from :func:`drop_node` (token rotated, node deleted)
1009  frame larger than ``MAX_AGENT_FRAME_BYTES`` (aiohttp closes it while reading)
1001  going away: the server is shutting down (``close_all``), agents reconnect elsewhere
1011  internal error (logged with the exception class only); the agent resends what is unacked
4000  replaced by a newer connection of the same node (the newest connection wins)
====  =========================================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Final

from aiohttp import WSCloseCode, WSMsgType, web

from agent.protocol import (
    MAX_AGENT_FRAME_BYTES,
    STREAM_PATH,
    Ack,
    AlertEvent,
    Config,
    Hello,
    Metrics,
    MetricsFrame,
    Ping,
    ProtocolError,
    WireSample,
    dumps,
    parse_agent_frame,
)
from server import nodedown
from server.api.auth import client_key
from server.api.schemas import ERROR
from server.errors import BadRequest, TooManyRequests, Unauthorized, Unavailable
from server.keys import CLOCK, DISPATCH, LIMITER, LIVE, SAVED, STATS, STORE
from server.live import LiveFull, NodeLive
from server.ratelimit import Rate
from server.security import NODE_TOKEN_PREFIX, plausible_secret
from server.shapes import FrameShape, ShapedFrame
from server.stats import Stats
from server.storage.records import NodeRef

log = logging.getLogger("oneconnect.server.ingest")
routes = web.RouteTableDef()

HELLO_TIMEOUT: Final = 10.0
HEARTBEAT: Final = 30.0
"""Websocket ping interval; a peer that does not pong within half of it is dropped."""
AUTH_FAILURES: Final = Rate(per_second=0.5, burst=30)
"""Refused stream handshakes per client: 30 at once, then one every 2 s (then 429)."""
FRAME_RATE: Final = 20.0
FRAME_BURST: Final = 2_500.0
"""Messages per connection: a burst covers a full agent outbox resent on reconnect."""
CLOSE_TIMEOUT: Final = 5.0
RESYNC_SKEW: Final = 300.0
"""How far (s) a resynced alert's ``ts`` / ``started_at`` may be ahead of the server's clock:
an agent box without NTP drifts by minutes; more is a broken or hostile clock, whose alert
would make the node's genuine later events of that fingerprint look stale."""
REPLACED: Final = 4000
_FRAMES_HELP: Final = "Agent messages handled, by type"
LEARN_BACKOFF: Final = 100
"""Metrics frames to skip before learning a shape again when the last shape read no frame (the
agent's series change every time, or its frames are valid in a way only the full path takes):
trying a shape that misses costs a decode."""


class AgentSockets:
    """The open agent websockets, one per node (the newest). Lives in ``app[SOCKETS]``."""

    def __init__(self, stats: Stats | None = None) -> None:
        self._by_node: dict[str, web.WebSocketResponse] = {}
        self._closing: set[asyncio.Task[Any]] = set()
        if stats is not None:
            stats.gauge("agent_streams_open", "Open agent streams", lambda: len(self._by_node))

    def __len__(self) -> int:
        return len(self._by_node)

    def get(self, node_id: str) -> web.WebSocketResponse | None:
        return self._by_node.get(node_id)

    def replace(self, node_id: str, ws: web.WebSocketResponse) -> None:
        """Make ``ws`` the node's connection; an older one is closed (4000) in the background."""
        old = self._by_node.get(node_id)
        self._by_node[node_id] = ws
        if old is not None and not old.closed:
            task = asyncio.create_task(
                old.close(code=REPLACED, message=b"replaced by a newer connection")
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def remove(self, node_id: str, ws: web.WebSocketResponse) -> bool:
        """Drop ``ws`` if it is still the node's connection (True then)."""
        if self._by_node.get(node_id) is ws:
            del self._by_node[node_id]
            return True
        return False

    async def close_all(self, code: int, message: bytes) -> None:
        sockets = [ws for ws in self._by_node.values() if not ws.closed]
        if sockets:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                    await asyncio.gather(
                        *(ws.close(code=code, message=message) for ws in sockets),
                        return_exceptions=True,
                    )
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=CLOSE_TIMEOUT)


SOCKETS: Final = web.AppKey("agent_sockets", AgentSockets)


async def drop_node(app: web.Application, node_id: str, *, forget: bool) -> None:
    """Close the node's stream because its token was rotated (``forget=False``) or the node
    was deleted (``forget=True``: its live state goes too). The agent's reconnect with the
    old token then gets 401."""
    ws = app[SOCKETS].get(node_id)
    if ws is not None and not ws.closed:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"node token revoked")
    if forget:
        app[LIVE].forget(node_id)


async def close_all(app: web.Application) -> None:
    """on_shutdown: close every agent stream with 1001 so agents reconnect to the next server."""
    sockets = app.get(SOCKETS)
    if sockets is not None:
        await sockets.close_all(WSCloseCode.GOING_AWAY, b"server shutting down")


class _Closed(Exception):
    """End the session: close with ``code``; ``reason`` is logged, ``short`` sent."""

    def __init__(self, code: int, short: str, reason: str | None = None) -> None:
        super().__init__(short)
        self.code = code
        self.short = short
        self.reason = reason or short


@routes.get(STREAM_PATH, name="agent_stream")
async def agent_stream(request: web.Request) -> web.StreamResponse:
    app = request.app
    stats = app[STATS]
    limiter, peer = app[LIMITER], client_key(request)
    try:
        limiter.ensure("agent-auth", peer, rate=AUTH_FAILURES.per_second, burst=AUTH_FAILURES.burst)
    except TooManyRequests:
        stats.inc("agent_refusals", help="Refused agent handshakes", reason="rate_limited")
        raise
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    ref = None
    if scheme.lower() == "bearer" and plausible_secret(token, NODE_TOKEN_PREFIX):
        ref = await app[STORE].node_by_token(token)
    if ref is None:
        limiter.spend("agent-auth", peer, rate=AUTH_FAILURES.per_second, burst=AUTH_FAILURES.burst)
        stats.inc("agent_refusals", help="Refused agent handshakes", reason="bad_token")
        raise Unauthorized("missing, unknown or revoked node token")
    ws = web.WebSocketResponse(
        max_msg_size=MAX_AGENT_FRAME_BYTES,
        heartbeat=HEARTBEAT,
        compress=False,
        timeout=CLOSE_TIMEOUT,
    )
    if not ws.can_prepare(request).ok:
        stats.inc("agent_refusals", help="Refused agent handshakes", reason="not_websocket")
        raise BadRequest("this route takes a websocket upgrade")
    live = app[LIVE]
    try:
        live.track(ref)
    except LiveFull:
        stats.inc("agent_refusals", help="Refused agent handshakes", reason="live_full")
        raise Unavailable("the server holds the most nodes it can; try again later") from None
    await ws.prepare(request)
    node = live.connected(ref)
    sockets = app[SOCKETS]
    sockets.replace(ref.id, ws)
    stats.inc("agent_connections", help="Accepted agent streams")
    try:
        await _Session(app, ref, node, ws).run()
    finally:
        if sockets.remove(ref.id, ws):
            live.disconnected(ref.id)
    return ws


class _Session:
    def __init__(
        self, app: web.Application, ref: NodeRef, node: NodeLive, ws: web.WebSocketResponse
    ) -> None:
        self.app = app
        self.ref = ref
        self.node = node
        self.ws = ws
        self.live = app[LIVE]
        self.saved = app[SAVED]
        self.stats = app[STATS]
        self.loop = asyncio.get_running_loop()
        self.tokens = FRAME_BURST
        self.stamp = self.loop.time()
        self.hello: Hello | None = None
        self.shape: FrameShape | None = None
        self.shaped = False
        """Whether ``shape`` has read a frame since it was learnt."""
        self.learn_in = 0
        self.metrics_frames = self.stats.counter("agent_frames", _FRAMES_HELP, type="metrics")

    async def run(self) -> None:
        ws = self.ws
        try:
            while True:
                timeout = HELLO_TIMEOUT if self.hello is None else None
                try:
                    msg = await ws.receive(timeout=timeout)
                except TimeoutError:
                    raise _Closed(
                        WSCloseCode.POLICY_VIOLATION, f"no hello within {HELLO_TIMEOUT:g} s"
                    ) from None
                if msg.type is WSMsgType.TEXT:
                    reply = self._on_text(msg.data)
                    if reply is not None:
                        await reply
                elif msg.type is WSMsgType.BINARY:
                    raise _Closed(WSCloseCode.POLICY_VIOLATION, "binary frames are not accepted")
                elif msg.type is WSMsgType.ERROR:
                    self._ended_by_error(msg.data)
                    return
                else:  # CLOSE / CLOSING / CLOSED: the peer or close_all / a newer connection
                    return
        except _Closed as closing:
            self.stats.inc("agent_policy_closes", help="Agent streams closed by the server")
            log.warning(
                "closing the stream of node %s (%d): %s",
                self.ref.id,
                closing.code,
                closing.reason,
            )
            await ws.close(code=closing.code, message=closing.short.encode()[:120])
        except Exception as exc:  # a bug or storage failure: not the agent's fault; it resends
            log.error(
                "closing the stream of node %s (1011) after an internal error (%s)",
                self.ref.id,
                exc.__class__.__name__,
            )
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")

    def _ended_by_error(self, exc: object) -> None:
        code = getattr(exc, "code", None)
        if code == WSCloseCode.MESSAGE_TOO_BIG:
            self.stats.inc("agent_policy_closes", help="Agent streams closed by the server")
            log.warning(
                "closed the stream of node %s (1009): frame larger than %d bytes",
                self.ref.id,
                MAX_AGENT_FRAME_BYTES,
            )
        else:
            log.info(
                "stream of node %s ended by a websocket error (%s)",
                self.ref.id,
                exc.__class__.__name__,
            )

    def _spend(self) -> None:
        now = self.loop.time()
        tokens = self.tokens + (now - self.stamp) * FRAME_RATE
        if tokens > FRAME_BURST:
            tokens = FRAME_BURST
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            raise _Closed(WSCloseCode.POLICY_VIOLATION, "too many messages")
        self.tokens = tokens - 1.0

    def _on_text(self, data: str) -> Coroutine[Any, Any, None] | None:
        """Handle one text message. A metrics frame is handled right here (the hot path: no
        coroutine, nothing awaited); for others the work that sends or stores is returned."""
        self._spend()
        if self.shape is not None:
            shaped = self.shape.read(data)
            if shaped is not None:
                self.shaped = True
                self._on_metrics(shaped)
                return None
        try:
            message = parse_agent_frame(data)
        except ProtocolError as exc:
            raise _Closed(
                WSCloseCode.POLICY_VIOLATION, "malformed message", safe_reason(str(exc))
            ) from None
        except Exception as exc:  # a parser bug must not take the server down
            raise _Closed(
                WSCloseCode.POLICY_VIOLATION,
                "malformed message",
                f"unparseable message ({exc.__class__.__name__})",
            ) from None
        if isinstance(message, MetricsFrame):
            if self.hello is None:
                self.metrics_frames.add()
                raise _Closed(WSCloseCode.POLICY_VIOLATION, "hello expected first")
            self._on_metrics(message)
            self._learn(message)
            return None
        self.stats.inc("agent_frames", help=_FRAMES_HELP, type=message.type)
        if isinstance(message, Hello):
            if self.hello is not None:
                raise _Closed(WSCloseCode.POLICY_VIOLATION, "hello sent twice")
            self.live.touch(self.node)
            return self._on_hello(message)
        if self.hello is None:
            raise _Closed(WSCloseCode.POLICY_VIOLATION, "hello expected first")
        self.live.touch(self.node)
        if isinstance(message, Ping):
            if message.reply:
                return None
            return self.ws.send_str(dumps(Ping(ts=message.ts, reply=True)))
        return self._on_event(message.event)

    def _on_metrics(self, frame: MetricsFrame | ShapedFrame) -> None:
        self.metrics_frames.add()
        self.live.touch(self.node)
        self.live.metrics(self.node, frame)
        self.saved.frame(self.ref, frame)  # returns at once unless opted in

    def _learn(self, frame: MetricsFrame) -> None:
        """After a metrics frame the shape did not read: learn its shape (with a back-off)."""
        if self.learn_in:
            self.learn_in -= 1
            return
        shape = FrameShape.learn(frame)
        wasted = shape is None or (self.shape is not None and not self.shaped)
        self.shape, self.shaped = shape, False
        self.learn_in = LEARN_BACKOFF if wasted else 0

    async def _on_hello(self, hello: Hello) -> None:
        self.hello = hello
        interval = max(hello.interval, self.ref.min_interval)
        self.live.hello(self.node, hello, interval)
        if hello.interval < self.ref.min_interval:
            await self.ws.send_str(dumps(Config(interval=self.ref.min_interval)))
        if hello.firing:
            await self.app[DISPATCH].resync(self.ref, self._resyncable(hello.firing))
        if not self.node.enrolled:
            try:
                await self.app[STORE].mark_enrolled(self.ref.id, self.app[CLOCK].time())
            except Unavailable:
                log.warning("could not mark node %s enrolled (storage unreachable)", self.ref.id)
            else:
                self.node.enrolled = True

    def _resyncable(self, firing: list[AlertEvent]) -> list[AlertEvent]:
        """The hello's firing alerts the server may learn (see the module docstring)."""
        latest = self.app[CLOCK].time() + RESYNC_SKEW
        own = nodedown.fingerprint(self.ref.id)
        kept = [
            e
            for e in firing
            if e.ts <= latest
            and e.started_at <= latest
            and e.rule != nodedown.RULE
            and e.fingerprint != own
        ]
        if len(kept) < len(firing):
            ignored = len(firing) - len(kept)
            self.stats.inc(
                "alert_events_resync_ignored",
                ignored,
                help="Firing alerts of a hello ignored (clock ahead, or the server's node_down)",
            )
            log.info("ignored %d firing alerts in the hello of node %s", ignored, self.ref.id)
        return kept

    async def _on_event(self, event: AlertEvent) -> None:
        settled = self.app[DISPATCH].start(self.ref, event)
        if settled.done():  # a duplicate, a stale event or no sinks: ack at once
            settled.result()
            await self.ws.send_str(dumps(Ack(ids=[event.id])))
            return
        # Deliveries may take a while (a receiver being retried): the stream goes on meanwhile.
        task = asyncio.create_task(self._ack_when_settled(settled, event.id))
        _ACKING.add(task)
        task.add_done_callback(_ACKING.discard)

    async def _ack_when_settled(self, settled: asyncio.Future[bool], event_id: str) -> None:
        try:
            await settled
        except Exception as exc:
            log.error(
                "closing the stream of node %s (1011): an alert event failed in dispatch (%s)",
                self.ref.id,
                exc.__class__.__name__,
            )
            if not self.ws.closed:
                await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"internal error")
            return
        if self.ws.closed:  # the agent resends it on its next connection, and that is acked
            return
        with contextlib.suppress(ConnectionError):
            await self.ws.send_str(dumps(Ack(ids=[event_id])))


_ACKING: set[asyncio.Task[None]] = set()
"""Ack tasks waiting for their event's deliveries (held here so none is collected early)."""


_FIELDS: Final = frozenset(
    name
    for model in (Hello, Metrics, Ping, AlertEvent, WireSample, Config)
    for name in model.model_fields
) | {"event", "hello", "metrics", "alert", "ping", "message", "[key]"}
_LISTS: Final = frozenset({"samples", "metrics", "rules", "ids"})
"""Fields whose next path part is an index (only there is a number kept)."""


def safe_reason(text: str) -> str:
    """A ProtocolError message fit for the log: the field path keeps only protocol field
    names and indexes (a dict key from the peer becomes ``…``); pydantic's text after the last
    ``": "`` quotes no input (agent.protocol elides quoted values)."""
    if text.startswith(("not JSON: ", "message of ")) or ": " not in text:
        return text[:160]
    where, _, what = text.rpartition(": ")
    parts: list[str] = []
    for part in where.split("."):
        index = part.isdigit() and bool(parts) and parts[-1] in _LISTS
        parts.append(part if part in _FIELDS or index else "…")
    return f"{'.'.join(parts)}: {what}"[:160]


OPENAPI: dict[str, dict[str, Any]] = {
    STREAM_PATH: {
        "get": {
            "summary": "The agents' stream (websocket; JSON messages per agent/protocol.py)",
            "operationId": "agentStream",
            "tags": ["agent"],
            "security": [{"nodeToken": []}],
            "description": "Upgrade to a websocket with `Authorization: Bearer <node token>`. "
            "Agent → server: hello (first; its `firing` names still-firing alerts acked "
            "before, which a restarted server learns without delivering them again), metrics, "
            "alert, ping. Server → agent: ack, config, ping. Close codes: 1008 policy "
            "violation, 1009 frame too big, 1001 server shutting down, 1013 try again later, "
            "4000 replaced by a newer connection.",
            "responses": {
                "101": {"description": "switching to the websocket protocol"},
                **{
                    str(status): {
                        "description": text,
                        "content": {"application/json": {"schema": ERROR}},
                    }
                    for status, text in (
                        (400, "not a websocket upgrade"),
                        (401, "missing, unknown or revoked node token"),
                        (429, "too many refused handshakes from this client (see Retry-After)"),
                        (503, "storage unreachable, or the server is full"),
                    )
                },
            },
        }
    }
}
