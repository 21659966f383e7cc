"""The agent's websocket stream to the server (◆ ARCHITECTURE.md §5).

One websocket to ``<server_url>/api/v1/agent/stream`` with ``Authorization: Bearer <node token>``.
Per connection: ``hello`` first, then every unacked outbox event, then alerts as they happen,
the latest metrics frame, and replies to the server's pings. Alert events stay in the outbox until
the server acks them and are resent on every new connection and after ``resend_after`` seconds.

Privacy: every outgoing message passes the gate exactly once, in ``StreamClient._send`` — the only
place in the agent that writes to the websocket.

Incoming messages are parsed by :func:`agent.inbound.parse_server_message`; anything malformed,
oversized, binary or otherwise refused is logged by reason only and counted, and more than
``REFUSAL_LIMIT`` refusals within ``REFUSAL_WINDOW`` seconds drop the connection.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import aiohttp
from yarl import URL

from agent import __version__
from agent.inbound import ProtocolError, parse_server_message
from agent.outbox import Outbox
from agent.wire import (
    MAX_AGENT_FRAME_BYTES,
    MAX_SERVER_FRAME_BYTES,
    STREAM_PATH,
    Ack,
    AgentMessage,
    Alert,
    AlertEvent,
    Config,
    Hello,
    Metrics,
    Ping,
    ServerMessage,
    encode,
)

STABLE_AFTER = 10.0
"""A connection that stayed up this long (or got an ack) resets the backoff."""
REFUSAL_LIMIT = 20
REFUSAL_WINDOW = 60.0
"""More than REFUSAL_LIMIT refused server messages within REFUSAL_WINDOW seconds drop the link."""
AUTH_REFUSED_STATUSES = frozenset({401, 403})
CLOSE_TIMEOUT = 5.0
_MAX_QUEUED_REPLIES = 8
_MIN_WAIT = 0.01

_WebSocket = aiohttp.ClientWebSocketResponse[Literal[True]]
_QUOTED = re.compile(r"'[^']*'")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9 _.:,;'()\[\]<>=+-]")


def stream_url(server_url: str) -> str:
    """``http(s)://host[:port][/prefix]`` → ``ws(s)://host[:port][/prefix]/api/v1/agent/stream``."""
    try:
        url = URL(server_url)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"server_url is not a valid URL ({exc.__class__.__name__})") from None
    scheme = {"http": "ws", "https": "wss"}.get(url.scheme)
    if scheme is None:
        raise ValueError(
            f"server_url must start with http:// or https:// (got scheme {url.scheme[:16]!r})"
        )
    if not url.host:
        raise ValueError("server_url has no host")
    if url.user is not None or url.password is not None:
        raise ValueError("server_url must not contain credentials; the token is set separately")
    if url.raw_query_string or url.raw_fragment:
        raise ValueError("server_url must not have a query or a fragment")
    path = url.raw_path.rstrip("/") + STREAM_PATH
    return str(url.with_scheme(scheme).with_path(path, encoded=True))


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: ``uniform(0, min(cap, base * 2**attempt))``."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), 64))
    return rng.uniform(0.0, ceiling)


def auth_refused_delay(*, cap: float, rng: random.Random) -> float:
    """After a refused token: retry at the cap (jittered in its upper half, so never a spin)."""
    return rng.uniform(cap / 2, cap)


def _safe(text: str) -> str:
    """A reason fit for the log: quoted values (which may echo hostile input) elided, short,
    printable, one line."""
    return _UNSAFE_CHARS.sub("?", _QUOTED.sub("'...'", text))[:120]


class _Outcome(enum.Enum):
    FAILED = "failed"
    AUTH_REFUSED = "auth refused"
    UNHEALTHY = "unhealthy"
    HEALTHY = "healthy"


class StreamClient:
    """Keeps the stream up until :meth:`close`; see the module docstring.

    ``hello`` builds the first message of each connection; ``gate`` is the privacy gate (returns
    the message to send, possibly reduced, or None to suppress it); ``on_config`` receives pushed
    settings (its exceptions are logged, not raised). Reconnects wait ``backoff_delay`` (full
    jitter, ``backoff_base * 2**attempt`` capped at ``backoff_cap``); a refused token waits
    ``auth_refused_delay``. ``heartbeat`` is the websocket ping interval that detects a dead
    link (0 disables it); ``clock`` timestamps sends for ``resend_after``.
    """

    def __init__(
        self,
        *,
        server_url: str,
        token: str,
        hello: Callable[[], Hello],
        gate: Callable[[AgentMessage], AgentMessage | None],
        outbox: Outbox,
        on_config: Callable[[Config], None],
        rng: random.Random | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        resend_after: float = 30.0,
        heartbeat: float = 30.0,
        connect_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self._url = stream_url(server_url)
        if not token or not token.isprintable() or any(ch.isspace() for ch in token):
            raise ValueError("the node token is empty or contains whitespace or control characters")
        if not 0 < backoff_base <= backoff_cap:
            raise ValueError("backoff_base must be > 0 and <= backoff_cap")
        if resend_after <= 0 or connect_timeout <= 0 or heartbeat < 0:
            raise ValueError("resend_after and connect_timeout must be > 0, heartbeat >= 0")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "User-Agent": f"oneconnect-agent/{__version__}",
        }
        self._hello = hello
        self._gate = gate
        self._outbox = outbox
        self._on_config = on_config
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 (jitter only)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._resend_after = resend_after
        self._heartbeat = heartbeat or None
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger("oneconnect." + __name__)

        self._main_task: asyncio.Task[None] | None = None
        self._closing = False
        self._ws: _WebSocket | None = None
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._metrics: Metrics | None = None
        self._replies: deque[Ping] = deque(maxlen=_MAX_QUEUED_REPLIES)
        self._refusals: deque[float] = deque(maxlen=REFUSAL_LIMIT + 1)
        self._got_ack = False

        self.connect_attempts = 0
        self.connects = 0
        self.refused_messages = 0
        self.gated_out = 0
        self.oversized_out = 0
        self.sent = 0

    @property
    def url(self) -> str:
        return self._url

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    # -- feeding the stream ---------------------------------------------------------------------

    def send_metrics(self, frame: Metrics) -> None:
        """Latest wins: a frame still waiting to go out is replaced, never queued behind."""
        self._metrics = frame
        self._wake.set()

    def add_event(self, event: AlertEvent) -> None:
        self._outbox.add(event)
        self._wake.set()

    def notify_events(self) -> None:
        """The outbox got new events from elsewhere: send them now if connected."""
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep connected until :meth:`close` (then return normally)."""
        if self._main_task is not None:
            raise RuntimeError("StreamClient.run() is already running")
        if self._closing:
            return
        main = asyncio.create_task(self._main(), name="oneconnect-agent-stream")
        self._main_task = main
        try:
            await main
        except asyncio.CancelledError:
            if not main.done():  # run() itself was cancelled: let the stream clean up first
                main.cancel()
                await asyncio.wait({main})
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        finally:
            self._main_task = None

    async def close(self) -> None:
        """Stop :meth:`run`, closing the websocket and the HTTP session."""
        self._closing = True
        main = self._main_task
        if main is not None and not main.done() and main is not asyncio.current_task():
            main.cancel()
            await asyncio.wait({main})

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 (the daemon's contract)
        """Wait until every outbox event is acked, at most ``timeout`` s; True if it is empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self._outbox) > 0:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._acked.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._acked.wait()
            except TimeoutError:
                break
        return len(self._outbox) == 0

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            attempt = 0
            while True:
                outcome = await self._connect_and_serve(session)
                if outcome is _Outcome.AUTH_REFUSED:
                    delay = auth_refused_delay(cap=self._backoff_cap, rng=self._rng)
                else:
                    if outcome is _Outcome.HEALTHY:
                        attempt = 0
                    delay = backoff_delay(
                        attempt, base=self._backoff_base, cap=self._backoff_cap, rng=self._rng
                    )
                    attempt += 1
                self._log.info("stream: reconnecting in %.2f s", delay)
                await asyncio.sleep(delay)

    async def _connect_and_serve(self, session: aiohttp.ClientSession) -> _Outcome:
        self.connect_attempts += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await session.ws_connect(
                    self._url,
                    headers=self._headers,
                    max_msg_size=MAX_SERVER_FRAME_BYTES,
                    heartbeat=self._heartbeat,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT),
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in AUTH_REFUSED_STATUSES:
                self._log.error(
                    "server refused the node token (HTTP %d); check ONECONNECT_AGENT_TOKEN",
                    exc.status,
                )
                return _Outcome.AUTH_REFUSED
            self._log.warning("stream handshake with %s failed: HTTP %d", self._url, exc.status)
            return _Outcome.FAILED
        except TimeoutError:
            self._log.warning("cannot connect to %s: timed out", self._url)
            return _Outcome.FAILED
        except (aiohttp.ClientError, OSError) as exc:
            self._log.warning("cannot connect to %s: %s", self._url, _safe(_describe(exc)))
            return _Outcome.FAILED

        loop = asyncio.get_running_loop()
        up_since = loop.time()
        self.connects += 1
        self._ws = ws
        self._got_ack = False
        self._refusals.clear()
        self._log.info("stream connected to %s", self._url)
        try:
            reason, dropped = await self._serve(ws)
        except Exception as exc:  # a failed send or a bug: reconnect, never crash the agent
            reason, dropped = _safe(_describe(exc)), False
        finally:
            self._ws = None
            if not ws.closed:
                await ws.close()
        self._log.warning("stream disconnected: %s", reason)
        if dropped:
            return _Outcome.UNHEALTHY
        healthy = self._got_ack or loop.time() - up_since >= STABLE_AFTER
        return _Outcome.HEALTHY if healthy else _Outcome.UNHEALTHY

    async def _serve(self, ws: _WebSocket) -> tuple[str, bool]:
        """One connection; returns (why it ended, whether we dropped it for refused messages)."""
        await self._send(ws, self._hello())
        self._outbox.reset_sent()
        reader = asyncio.create_task(self._read_loop(ws), name="oneconnect-agent-stream-read")
        writer = asyncio.create_task(self._write_loop(ws), name="oneconnect-agent-stream-write")
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            writer.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        for task in (reader, writer):
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                return _safe(_describe(exc)), False
        if reader.done() and not reader.cancelled():
            return reader.result()
        return "writer stopped", False

    # -- outgoing -------------------------------------------------------------------------------

    async def _send(self, ws: _WebSocket, message: AgentMessage) -> bool:
        """THE way out: the privacy gate, exactly once, then the websocket. True if sent."""
        try:
            outgoing = self._gate(message)
        except Exception:
            self.gated_out += 1
            self._log.exception("privacy gate failed on a %s message; not sent", message.type)
            return False
        if outgoing is None:
            self.gated_out += 1
            return False
        data = encode(outgoing)
        if len(data.encode()) > MAX_AGENT_FRAME_BYTES:
            self.oversized_out += 1
            self._log.warning("%s message exceeds %d bytes; not sent", outgoing.type, len(data))
            return False
        await ws.send_str(data)
        self.sent += 1
        return True

    async def _write_loop(self, ws: _WebSocket) -> None:
        while True:
            self._wake.clear()
            while self._replies:
                await self._send(ws, self._replies.popleft())
            for event in self._outbox.due(self._clock(), self._resend_after):
                if event.id in self._outbox:  # may have been acked while we were sending
                    await self._send(ws, Alert(event=event))
                    self._outbox.mark_sent((event.id,), self._clock())
            if self._metrics is not None:
                frame, self._metrics = self._metrics, None
                await self._send(ws, frame)
            if self._wake.is_set():
                continue
            resend_at = self._outbox.next_resend_at(self._resend_after)
            timeout = None if resend_at is None else max(_MIN_WAIT, resend_at - self._clock())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # -- incoming -------------------------------------------------------------------------------

    async def _read_loop(self, ws: _WebSocket) -> tuple[str, bool]:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                if not self._handle_text(msg.data):
                    return self._drop_reason(), True
            elif msg.type is aiohttp.WSMsgType.BINARY:
                if not self._refuse("binary frame"):
                    return self._drop_reason(), True
            elif msg.type is aiohttp.WSMsgType.ERROR:
                exc = msg.data
                if (
                    isinstance(exc, aiohttp.WebSocketError)
                    and exc.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
                ):
                    self._refuse(f"frame larger than {MAX_SERVER_FRAME_BYTES} bytes")
                    return "the server sent an oversized frame", False
                return f"websocket error: {_safe(_describe(exc))}", False
            else:
                return f"closed by the server (code {ws.close_code})", False

    def _drop_reason(self) -> str:
        return f"more than {REFUSAL_LIMIT} refused messages within {REFUSAL_WINDOW:.0f} s"

    def _handle_text(self, data: str) -> bool:
        """Parse and act on one text frame; False once too many messages were refused."""
        try:
            message = parse_server_message(data)
        except ProtocolError as exc:
            return self._refuse(str(exc))
        except RecursionError:
            return self._refuse("JSON nested too deeply")
        except Exception as exc:  # a parser bug must not take the stream down
            return self._refuse(f"unparseable message ({exc.__class__.__name__})")
        self._dispatch(message)
        return True

    def _dispatch(self, message: ServerMessage) -> None:
        if isinstance(message, Ack):
            self._outbox.ack(message.ids)
            self._got_ack = True
            self._acked.set()
        elif isinstance(message, Config):
            try:
                self._on_config(message)
            except Exception:
                self._log.exception("config pushed by the server could not be applied")
        elif not message.reply:  # echo the server's ts (for its RTT) unless it is not finite
            ts = message.ts if math.isfinite(message.ts) else self._clock()
            self._replies.append(Ping(ts=ts, reply=True))
            self._wake.set()

    def _refuse(self, reason: str) -> bool:
        """Count and log a refused message; False if the refusal rate says: drop the link."""
        self.refused_messages += 1
        self._log.warning("refused a message from the server: %s", _safe(reason))
        now = asyncio.get_running_loop().time()
        self._refusals.append(now)
        return not (
            len(self._refusals) > REFUSAL_LIMIT and now - self._refusals[0] <= REFUSAL_WINDOW
        )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
