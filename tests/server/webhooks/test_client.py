"""The webhook client against real receivers on 127.0.0.1 (a raw HTTP/1.1 server that counts
accepted connections), with a stub inner resolver so that no name ever reaches real DNS.

Two groups: SSRF blocks happen before any connection (the receiver's count stays 0, and
the same request goes through once loopback is allowed); and the client's behaviour —
capped reads, redirects not followed, timeouts, refused connections, TLS and protocol
errors, Retry-After, no cookies, the User-Agent, keep-alive, and no URL path or query in
``detail``. Only loopback addresses are ever connected to."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.webhooks.client import ERROR_KINDS, Attempt, WebhookClient
from server.webhooks.ssrf import parse_networks
from tests.server.webhooks.test_ssrf import StubResolver

LOOPBACK = parse_networks(["127.0.0.0/8"])
SECRET_PATH = "/services/T000/B000/SECRETTOKEN"
SECRET_QUERY = "token=QUERYSECRET"
HEADERS = {"content-type": "application/json", "webhook-id": "msg_1"}
_MAX_REQUESTS_PER_CONNECTION = 1000
_STOP_WAIT = 2.0


# ------------------------------------------------------------------------------ receiver


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    delay: float = 0.0
    raw: bytes | None = None
    """Sent as is instead of a response, then the connection is closed (b"": just close)."""


Handler = Callable[[Request], Reply]


def ok(request: Request) -> Reply:
    return Reply(200, body=b"ok")


@dataclass
class Receiver:
    """A tiny HTTP/1.1 server on 127.0.0.1:<free port>: keep-alive, Content-Length bodies."""

    handler: Handler = ok
    ssl_context: ssl.SSLContext | None = None
    accepted: int = 0
    requests: list[Request] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_STOP_WAIT)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            for _ in range(_MAX_REQUESTS_PER_CONNECTION):
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                reply = self.handler(request)
                if reply.delay:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), reply.delay)
                    if self._stopping.is_set():
                        break
                if reply.raw is not None:
                    writer.write(reply.raw)
                    await writer.drain()
                    break
                writer.write(_response(reply))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
            self._tasks.discard(task)


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    first, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = first.split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, target, headers, body)


def _response(reply: Reply) -> bytes:
    lines = [f"HTTP/1.1 {reply.status} X", f"Content-Length: {len(reply.body)}"]
    lines += [f"{name}: {value}" for name, value in reply.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body


StartReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def receivers() -> AsyncIterator[StartReceiver]:
    started: list[Receiver] = []

    async def start(handler: Handler = ok, ssl_context: ssl.SSLContext | None = None) -> Receiver:
        receiver = await Receiver(handler, ssl_context).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
def stub() -> StubResolver:
    return StubResolver(
        {
            "internal.test": ["127.0.0.1"],
            "mixed.test": ["93.184.215.14", "127.0.0.1"],  # never connected to: see tests
        }
    )


def client_for(
    stub: StubResolver,
    *,
    allow: bool = True,
    total_timeout: float = 10.0,
    max_response_bytes: int = 64 * 1024,
    excerpt_chars: int = 512,
) -> WebhookClient:
    return WebhookClient(
        allow=LOOPBACK if allow else (),
        resolver=stub,
        total_timeout=total_timeout,
        max_response_bytes=max_response_bytes,
        excerpt_chars=excerpt_chars,
    )


def assert_no_secret(attempt: Attempt) -> None:
    assert "SECRETTOKEN" not in attempt.detail
    assert "QUERYSECRET" not in attempt.detail
    assert "/services" not in attempt.detail


# ------------------------------------------------------------- blocked before connecting


async def test_name_resolving_to_loopback_is_blocked_before_any_connection(
    receivers: StartReceiver, stub: StubResolver
) -> None:
    receiver = await receivers()
    url = receiver.url(f"{SECRET_PATH}?{SECRET_QUERY}", host="internal.test")
    async with client_for(stub, allow=False) as client:
        attempt = await client.post(url, b"{}", HEADERS)
    assert attempt.error == "blocked"
    assert attempt.status is None
    assert attempt.detail == "webhook host internal.test resolves to 127.0.0.1, a loopback address"
    assert stub.calls == ["internal.test"]
    assert receiver.accepted == 0
    assert_no_secret(attempt)

    async with client_for(stub, allow=True) as client:  # the same request, loopback allowed
        attempt = await client.post(url, b"{}", HEADERS)
    assert attempt.ok
    assert receiver.accepted == 1
    assert receiver.requests[0].target == f"{SECRET_PATH}?{SECRET_QUERY}"


async def test_name_with_one_private_address_among_public_ones_is_blocked(
    receivers: StartReceiver, stub: StubResolver
) -> None:
    receiver = await receivers()
    async with client_for(stub, allow=False) as client:
        attempt = await client.post(receiver.url(host="mixed.test"), b"{}", HEADERS)
    assert attempt.error == "blocked"
    assert "127.0.0.1, a loopback address" in attempt.detail
    assert receiver.accepted == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "127.0.0.1."])
async def test_ip_literal_is_blocked_without_asking_the_resolver(
    receivers: StartReceiver, stub: StubResolver, host: str
) -> None:
    receiver = await receivers()
    async with client_for(stub, allow=False) as client:
        attempt = await client.post(receiver.url(host=host), b"{}", HEADERS)
    assert attempt.error == "blocked"
    assert "loopback" in attempt.detail
    assert stub.calls == []
    assert receiver.accepted == 0


async def test_aiohttp_connects_to_ip_literals_without_the_resolver(
    receivers: StartReceiver, stub: StubResolver
) -> None:
    """Why check_url runs before every request: the resolver never sees an IP literal."""
    receiver = await receivers()
    async with client_for(stub) as client:
        attempt = await client.post(receiver.url(), b"{}", HEADERS)
    assert attempt.ok
    assert stub.calls == []


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("ftp://internal.test/x", "webhook URL scheme 'ftp' is not allowed; use https or http"),
        ("http://u:p@internal.test/x", "webhook URL must not contain user:password@; send"),
        ("http://internal.test:0/x", "webhook URL port 0 is out of range 1..65535"),
        ("not a url", "webhook URL scheme '(none)' is not allowed"),
    ],
)
async def test_malformed_urls_are_invalid_url(stub: StubResolver, url: str, detail: str) -> None:
    async with client_for(stub) as client:
        attempt = await client.post(url, b"{}", HEADERS)
    assert attempt.error == "invalid_url"
    assert attempt.detail.startswith(detail)
    assert stub.calls == []


async def test_dns_failure_is_a_connect_error(stub: StubResolver) -> None:
    async with client_for(stub) as client:
        attempt = await client.post(f"http://nowhere.test{SECRET_PATH}", b"{}", HEADERS)
    assert (attempt.error, attempt.detail) == ("connect", "DNS lookup for nowhere.test failed")


# ------------------------------------------------------------------ client behaviour


async def test_delivery_sends_body_headers_and_user_agent_and_no_cookies(
    receivers: StartReceiver, stub: StubResolver
) -> None:
    def handler(request: Request) -> Reply:
        return Reply(200, headers=(("Set-Cookie", "session=abc; Path=/"),), body=b"thanks")

    receiver = await receivers(handler)
    async with client_for(stub) as client:
        first = await client.post(receiver.url(), b'{"a":1}', HEADERS)
        second = await client.post(receiver.url(), b'{"a":2}', HEADERS)
    assert first.ok
    assert second.ok
    assert (first.status, first.error, first.detail, first.excerpt) == (
        200,
        None,
        "HTTP 200",
        "thanks",
    )
    assert first.retry_after is None
    assert 0 <= first.latency < 2
    one, two = receiver.requests
    assert (one.method, one.body, two.body) == ("POST", b'{"a":1}', b'{"a":2}')
    assert one.headers["user-agent"] == "OneConnect-Alert-Webhooks/1"
    assert one.headers["webhook-id"] == "msg_1"
    assert one.headers["content-type"] == "application/json"
    assert one.headers["accept-encoding"] == "identity"
    assert "cookie" not in one.headers
    assert "cookie" not in two.headers  # the Set-Cookie was not kept


async def test_excerpt_is_capped_in_characters(
    receivers: StartReceiver, stub: StubResolver
) -> None:
    body = ("é" * 100 + "x" * 1000).encode()
    receiver = await receivers(lambda request: Reply(200, body=body))
    async with client_for(stub, excerpt_chars=150) as client:
        attempt = await client.post(receiver.url(), b"{}", HEADERS)
    assert attempt.excerpt == "é" * 100 + "x" * 50
    assert attempt.detail == "HTTP 200"


async def test_huge_body_is_read_only_up_to_the_cap(
    receivers: StartReceiver, stub: StubResolver
) -> None:
    body = b"<" + b"A" * (8 * 1024 * 1024)
    receiver = await receivers(lambda request: Reply(500, body=body))
    async with client_for(stub, max_response_bytes=64 * 1024, excerpt_chars=10) as client:
        attempt = await client.post(receiver.url(), b"{}", HEADERS)
        again = await client.post(receiver.url(), b"{}", HEADERS)
    assert (attempt.status, attempt.error) == (500, None)
    assert attempt.excerpt == "<AAAAAAAAA"
    assert attempt.detail == "HTTP 500 (body over 65536 bytes; the rest was not read)"
    assert attempt.latency < 2
    assert again.status == 500
    assert receiver.accepted == 2  # a cut-off connection is not reused


async def test_redirect_is_not_followed(receivers: StartReceiver, stub: StubResolver) -> None:
    target = await receivers()

    def redirect(request: Request) -> Reply:
        return Reply(302, headers=(("Location", target.url("/elsewhere")),), body=b"moved")

    receiver = await receivers(redirect)
    async with client_for(stub) as client:
        attempt = await client.post(receiver.url(f"{SECRET_PATH}?{SECRET_QUERY}"), b"{}", HEADERS)
    assert (attempt.status, attempt.error, attempt.detail) == (302, None, "HTTP 302")
    assert not attempt.ok
    assert receiver.accepted == 1
    assert target.accepted == 0


async def test_retry_after_is_surfaced(receivers: StartReceiver, stub: StubResolver) -> None:
    def busy(request: Request) -> Reply:
        return Reply(503, headers=(("Retry-After", "120"),), body=b"busy")

    receiver = await receivers(busy)
    async with client_for(stub) as client:
        attempt = await client.post(receiver.url(), b"{}", HEADERS)
    assert (attempt.status, attempt.retry_after, attempt.excerpt) == (503, "120", "busy")


async def test_slow_receiver_times_out(receivers: StartReceiver, stub: StubResolver) -> None:
    receiver = await receivers(lambda request: Reply(200, delay=30))
    url = receiver.url(f"{SECRET_PATH}?{SECRET_QUERY}")
    async with client_for(stub, total_timeout=0.3) as client:
        attempt = await client.post(url, b"{}", HEADERS)
    assert (attempt.status, attempt.error) == (None, "timeout")
    assert attempt.detail == f"no response within 0.3 s from 127.0.0.1:{receiver.port}"
    assert 0.25 <= attempt.latency < 2
    assert_no_secret(attempt)


async def test_refused_connection_is_a_connect_error(stub: StubResolver) -> None:
    with socket.socket() as bound:  # bound, not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        async with client_for(stub) as client:
            attempt = await client.post(
                f"http://127.0.0.1:{port}{SECRET_PATH}?{SECRET_QUERY}", b"{}", HEADERS
            )
    assert (attempt.status, attempt.error) == (None, "connect")
    assert attempt.detail == f"cannot connect to 127.0.0.1:{port}: Connection refused"
    assert_no_secret(attempt)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"HELLO WORLD\r\n\r\n", "malformed HTTP response from 127.0.0.1:{port}: Bad status line"),
        (b"", "127.0.0.1:{port} closed the connection without a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "HTTP 200 (reading the body"),
    ],
)
async def test_broken_responses(
    receivers: StartReceiver, stub: StubResolver, raw: bytes, detail: str
) -> None:
    receiver = await receivers(lambda request: Reply(raw=raw))
    async with client_for(stub) as client:
        attempt = await client.post(receiver.url(), b"{}", HEADERS)
    assert detail.format(port=receiver.port) in attempt.detail
    if attempt.status is None:
        assert attempt.error == "protocol"
    else:  # the headers arrived: a response, however short its body
        assert (attempt.status, attempt.error, attempt.excerpt) == (200, None, "short")


def _self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def test_untrusted_certificate_is_a_tls_error(
    receivers: StartReceiver, stub: StubResolver, tmp_path: Path
) -> None:
    receiver = await receivers(ok, _self_signed(tmp_path))
    async with client_for(stub) as client:
        attempt = await client.post(receiver.url(f"{SECRET_PATH}?{SECRET_QUERY}"), b"{}", HEADERS)
    assert (attempt.status, attempt.error) == (None, "tls")
    assert attempt.detail.startswith(f"TLS certificate of 127.0.0.1:{receiver.port} not accepted")
    assert_no_secret(attempt)
    assert receiver.requests == []


async def test_no_detail_ever_holds_the_path_or_query(
    receivers: StartReceiver, stub: StubResolver
) -> None:
    statuses = iter([200, 503, 404])
    receiver = await receivers(lambda request: Reply(next(statuses, 200)))
    url = receiver.url(f"{SECRET_PATH}?{SECRET_QUERY}")
    async with client_for(stub) as client:
        attempts = [await client.post(url, b"{}", HEADERS) for _ in range(3)]
    async with client_for(stub, allow=False) as client:
        attempts.append(await client.post(url, b"{}", HEADERS))
        attempts.append(await client.post(url.replace("127.0.0.1", "internal.test"), b"", {}))
    assert [a.status or a.error for a in attempts] == [200, 503, 404, "blocked", "blocked"]
    for attempt in attempts:
        assert_no_secret(attempt)
        assert attempt.error is None or attempt.error in ERROR_KINDS


async def test_one_pool_with_keep_alive(receivers: StartReceiver, stub: StubResolver) -> None:
    receiver = await receivers()
    async with client_for(stub) as client:
        for _ in range(20):
            assert (await client.post(receiver.url(), b"{}", HEADERS)).ok
        results = await asyncio.gather(
            *(client.post(receiver.url(), b"{}", HEADERS) for _ in range(100))
        )
    assert all(attempt.ok for attempt in results)
    assert len(receiver.requests) == 120
    assert receiver.accepted <= 32  # limit_per_host


async def test_closed_client_refuses_to_post(stub: StubResolver) -> None:
    client = client_for(stub)
    await client.close()
    with pytest.raises(RuntimeError, match="closed"):
        await client.post("http://internal.test/x", b"", {})
