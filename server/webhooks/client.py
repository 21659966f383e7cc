"""The one HTTP client that talks to developers' webhook URLs: SSRF-safe, capped, quiet.

    async with WebhookClient() as client:
        attempt = await client.post(url, body, headers)   # an Attempt; never raises for the target

:meth:`WebhookClient.post` turns everything that can go wrong with a target into an
:class:`Attempt` (``error`` one of :data:`ERROR_KINDS`); :mod:`server.webhooks.retry`
decides what happens next. Only programming errors (a closed client, a header value aiohttp
refuses) raise.

Choices:

- **SSRF**: :func:`~server.webhooks.ssrf.check_url` runs before every request, because
  aiohttp sends IP-literal hosts straight to the socket without asking the resolver; the
  connector's resolver is a :class:`~server.webhooks.ssrf.SafeResolver`, so a name that
  resolves to any blocked address fails before a connection is tried. The resolver's
  :class:`~server.webhooks.ssrf.UnsafeTarget` is not an ``OSError``, so aiohttp 3.14 lets
  it out of ``session.post`` unwrapped; the cause chain is searched as well, in case a
  later aiohttp wraps it.
- **No surprises from the environment or the target**: ``trust_env=False`` (no proxy from
  ``HTTP_PROXY``, no ``.netrc``), redirects are not followed (a 3xx is an Attempt with that
  status), cookies are neither kept nor sent (``DummyCookieJar``).
- **Bounded reads**: at most ``max_response_bytes`` of the body are read, then the
  connection is dropped (not an error). ``Accept-Encoding: identity`` is sent and
  ``auto_decompress`` is off, so a compressed body stays compressed: a gzip bomb cannot
  expand, at the price of an unreadable excerpt from a server that compresses anyway.
- **Secrets stay out**: Slack, Discord and other URLs carry tokens in the path or query, so
  ``detail`` is composed here from the host, port and error class — never from aiohttp's
  messages, which quote the whole URL — and never holds the request body or headers.
- **Fast**: one session and connection pool (keep-alive) for the client's life, created on
  first use inside the running loop; DNS answers are cached by the connector (only checked
  ones ever are), and so is each URL that passed :func:`check_url` (parsed, with its verdict;
  a refusal is never cached); per request there is the capped read.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import AbstractResolver
from yarl import URL

from server.webhooks.ssrf import URL_REASONS, Network, SafeResolver, UnsafeTarget, check_url

ERROR_KINDS: Final = ("blocked", "invalid_url", "timeout", "connect", "tls", "protocol")
DEFAULT_USER_AGENT: Final = "OneConnect-Alert-Webhooks/1"

_READ_CHUNK: Final = 64 * 1024
_DNS_TTL: Final = 10
"""Seconds a checked DNS answer is reused (aiohttp's default)."""
_CAUSE_DEPTH: Final = 8
_CHECKED_URLS: Final = 4096


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST to a webhook URL came to."""

    status: int | None
    """HTTP status; None when no response arrived."""
    latency: float
    """Seconds from the request's start to the headers and the capped body (or the failure)."""
    error: str | None
    """None when a response arrived, else one of :data:`ERROR_KINDS`."""
    detail: str
    """Short human text; never the URL's path or query, the request body or its headers."""
    excerpt: str
    """The first characters of the response body (utf-8, undecodable bytes replaced)."""
    retry_after: str | None
    """The raw Retry-After header, if the response had one."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookClient:
    """One aiohttp session behind :meth:`post`; close it (or use ``async with``) when done.

    ``resolver`` is the *inner* resolver the :class:`SafeResolver` asks (tests pass a stub;
    default: aiohttp's ThreadedResolver); one passed in is the caller's to close.
    """

    def __init__(
        self,
        *,
        allow: Sequence[Network] = (),
        connect_timeout: float = 5.0,
        total_timeout: float = 10.0,
        max_response_bytes: int = 64 * 1024,
        excerpt_chars: int = 512,
        resolver: AbstractResolver | None = None,
        limit: int = 200,
        limit_per_host: int = 32,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if not (connect_timeout > 0 and total_timeout > 0):
            raise ValueError("connect_timeout and total_timeout must be positive")
        if max_response_bytes < 0 or excerpt_chars < 0:
            raise ValueError("max_response_bytes and excerpt_chars must not be negative")
        if limit < 1 or limit_per_host < 1:
            raise ValueError("limit and limit_per_host must be at least 1")
        self._allow: tuple[Network, ...] = tuple(allow)
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._max_bytes = max_response_bytes
        self._excerpt_chars = excerpt_chars
        # A utf-8 character is at most 4 bytes: this many bytes hold the excerpt.
        self._excerpt_bytes = min(max_response_bytes, 4 * excerpt_chars)
        self._inner = resolver
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._resolver: SafeResolver | None = None
        self._closed = False
        self._checked: dict[str, URL] = {}
        """URLs check_url accepted (a pure function of the URL and ``allow``), parsed."""

    async def __aenter__(self) -> WebhookClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("WebhookClient is closed")
        self._resolver = SafeResolver(self._allow, self._inner)
        connector = aiohttp.TCPConnector(
            resolver=self._resolver,
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            use_dns_cache=True,
            ttl_dns_cache=_DNS_TTL,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=self._total_timeout, sock_connect=self._connect_timeout
            ),
            headers={hdrs.USER_AGENT: self._user_agent, hdrs.ACCEPT_ENCODING: "identity"},
        )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Attempt:
        """POST ``body`` to ``url`` once; every outcome for the target is an :class:`Attempt`."""
        started = time.perf_counter()
        target = self._checked.get(url)
        if target is None:
            try:
                target = check_url(url, self._allow)
            except UnsafeTarget as exc:
                return self._failed(started, *_refused(exc))
            if len(self._checked) >= _CHECKED_URLS:
                self._checked.clear()
            self._checked[url] = target
        session = self._session or self._open()
        try:
            response = await session.post(target, data=body, headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, OSError, TimeoutError, UnsafeTarget) as exc:
            return self._failed(started, *self._classify(exc, target))
        complete = False
        try:
            head, note, complete = await self._read(response)
        finally:
            if complete:
                response.release()  # the connection goes back to the pool
            else:
                response.close()  # unread bytes: the connection cannot be reused
        status = response.status
        return Attempt(
            status=status,
            latency=time.perf_counter() - started,
            error=None,
            detail=f"HTTP {status}{note}",
            excerpt=head.decode("utf-8", errors="replace")[: self._excerpt_chars],
            retry_after=response.headers.get(hdrs.RETRY_AFTER),
        )

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[bytes, str, bool]:
        """Read at most ``max_response_bytes``: (excerpt bytes, note for detail, complete)."""
        head = bytearray()
        remaining = self._max_bytes
        content = response.content
        try:
            while remaining > 0:  # every pass reads ≥ 1 byte or ends: bounded by the cap
                chunk = await content.read(min(remaining, _READ_CHUNK))
                if not chunk:
                    return bytes(head), "", True
                if len(head) < self._excerpt_bytes:
                    head += chunk[: self._excerpt_bytes - len(head)]
                remaining -= len(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            kind = "timed out" if isinstance(exc, TimeoutError) else "failed"
            return bytes(head), f" (reading the body {kind})", False
        if content.at_eof():
            return bytes(head), "", True
        return bytes(head), f" (body over {self._max_bytes} bytes; the rest was not read)", False

    def _failed(self, started: float, kind: str, detail: str) -> Attempt:
        return Attempt(
            status=None,
            latency=time.perf_counter() - started,
            error=kind,
            detail=detail,
            excerpt="",
            retry_after=None,
        )

    def _classify(self, exc: BaseException, target: URL) -> tuple[str, str]:
        """(error kind, detail) for a request that produced no response."""
        unsafe = _find_unsafe(exc)
        if unsafe is not None:
            return _refused(unsafe)
        where = _where(target)
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            problem = exc.certificate_error
            why = getattr(problem, "verify_message", None) or type(problem).__name__
            return "tls", f"TLS certificate of {where} not accepted: {why}"
        if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
            return "tls", f"TLS handshake with {where} failed"
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            limit = min(self._connect_timeout, self._total_timeout)
            return "timeout", f"connect timeout after {limit:.1f} s to {where}"
        if isinstance(exc, TimeoutError):
            return "timeout", f"no response within {self._total_timeout:.1f} s from {where}"
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return "connect", f"DNS lookup for {target.host} failed"
        if isinstance(exc, aiohttp.ClientConnectorError):
            return "connect", f"cannot connect to {where}: {_os_reason(exc)}"
        if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
            return "invalid_url", "webhook URL refused by the HTTP client"
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return "protocol", f"{where} closed the connection without a response"
        if isinstance(exc, aiohttp.ClientResponseError):
            first_line = exc.message.strip().split("\n", 1)[0].rstrip(":")[:80]
            return "protocol", f"malformed HTTP response from {where}: {first_line}"
        if isinstance(exc, aiohttp.ClientPayloadError):
            return "protocol", f"malformed HTTP response from {where}"
        if isinstance(exc, OSError):
            return "connect", f"connection to {where} failed: {_os_reason(exc)}"
        return "protocol", f"HTTP exchange with {where} failed: {type(exc).__name__}"


def _refused(exc: UnsafeTarget) -> tuple[str, str]:
    return ("invalid_url" if exc.reason in URL_REASONS else "blocked"), str(exc)


def _os_reason(exc: OSError) -> str:
    """ "Connection refused" and the like, from the errno (aiohttp's text quotes addresses)."""
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__


def _find_unsafe(exc: BaseException) -> UnsafeTarget | None:
    current: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if current is None:
            return None
        if isinstance(current, UnsafeTarget):
            return current
        current = current.__cause__ or current.__context__
    return None


def _where(target: URL) -> str:
    """``host:port`` of the target — what a detail may name (no path, no query)."""
    host = target.host or ""
    return f"[{host}]:{target.port}" if ":" in host else f"{host}:{target.port}"
