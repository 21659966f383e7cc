"""Which addresses a webhook may reach, and the resolver that enforces it (SSRF protection).

A developer's webhook URL must never make the server talk to itself, its network or a cloud
metadata service. Two checks, because aiohttp takes two paths to an address:

- :func:`check_url` — before every request. The URL's shape (http/https, a host, no
  ``user:password@``, a port in 1..65535) and, for an IP-literal host, the address itself:
  aiohttp's connector hands IP literals straight to the socket and never calls the resolver.
  Hostnames are not resolved here.
- :class:`SafeResolver` — the connector's resolver. It resolves through an inner resolver,
  checks *every* address and raises :class:`UnsafeTarget` if any one is blocked, so no
  connection is attempted; otherwise it returns exactly the addresses it checked, so aiohttp
  connects to what was checked (no second lookup, no DNS rebinding between check and connect;
  aiohttp's DNS cache only ever holds checked results).

The rule: an address is allowed when it is globally reachable and not a metadata address —
judged by the explicit tables below (first match wins, so reasons are precise), and for
anything the tables miss by ``ipaddress``'s ``is_global`` (IPv4) or "inside 2000::/3"
(IPv6; Python's own IPv6 ``is_global`` misses e.g. ``::ffff:0:0:0/96``). Cloud metadata
addresses are listed explicitly: Azure's 168.63.129.16 is otherwise a public address.

IPv6 forms that carry an IPv4 address are unwrapped and the IPv4 address judged too:
IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96`` and
the local-use ``64:ff9b:1::/48`` (low 32 bits), 6to4 ``2002::/16`` and Teredo ``2001::/32``
(server and de-obfuscated client). An address blocked in any form is blocked. The wrapper
prefixes themselves are judged by what they carry, except ``64:ff9b:1::/48``, which is
local-use by definition (RFC 8215) and so blocked as private whatever it embeds.

``allow`` (operator configuration, :func:`parse_networks`) exempts networks: an address
inside an allowed network is allowed outright, and an embedded IPv4 address inside one
counts as allowed (``::ffff:127.0.0.1`` with ``127.0.0.0/8`` allowed). Allow wins over every
block, metadata included — it is an explicit operator choice, used by tests and on-premise
receivers.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

SCHEMES: Final = frozenset({"http", "https"})
URL_REASONS: Final = frozenset({"invalid", "scheme", "host", "credentials", "port", "numeric"})
"""Reasons of :class:`UnsafeTarget` that are about the URL's shape, not its address (the
client reports them as ``invalid_url``; every other reason is ``blocked``)."""

_PHRASES: Final[dict[str, str]] = {
    "unspecified": "an unspecified ('this network') address",
    "loopback": "a loopback address",
    "private": "a private address",
    "site-local": "a site-local address",
    "link-local": "a link-local address",
    "cgnat": "a carrier-grade NAT (shared, 100.64.0.0/10) address",
    "metadata": "a cloud metadata address",
    "multicast": "a multicast address",
    "broadcast": "the broadcast address",
    "documentation": "a documentation-only address",
    "benchmarking": "a benchmarking address",
    "reserved": "a reserved, not globally reachable address",
}


def _table(rows: Sequence[tuple[str, str]]) -> tuple[tuple[Network, str], ...]:
    return tuple((ip_network(cidr), reason) for cidr, reason in rows)


_V4_BLOCKS: Final = _table(
    [
        # Specific entries before the ranges that contain them.
        ("169.254.169.254/32", "metadata"),  # AWS, GCP, Azure IMDS, OpenStack, DigitalOcean…
        ("168.63.129.16/32", "metadata"),  # Azure wire server — a public address otherwise
        ("100.100.100.200/32", "metadata"),  # Alibaba Cloud
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    ]
)
_V6_BLOCKS: Final = _table(
    [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fd00:ec2::254/128", "metadata"),  # AWS IMDS over IPv6
        ("fc00::/7", "private"),  # unique local addresses
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
        ("100::/64", "reserved"),  # discard-only
        ("2001:2::/48", "benchmarking"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
    ]
)
_V6_GLOBAL_UNICAST: Final = IPv6Network("2000::/3")

_MAPPED: Final = IPv6Network("::ffff:0:0/96")
_COMPAT: Final = IPv6Network("::/96")
_NAT64: Final = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL: Final = IPv6Network("64:ff9b:1::/48")
_SIX_TO_FOUR: Final = IPv6Network("2002::/16")
_TEREDO: Final = IPv6Network("2001::/32")

_HOSTNAME: Final = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.?"
)
"""A DNS name as yarl gives it (lower case, IDNA-encoded); anything else is not a host."""


class UnsafeTarget(Exception):
    """A webhook URL the server refuses to contact; ``str()`` says why, ``reason`` in a word.

    The message names the host (never the URL's path or query, which may carry tokens).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """Parse an allow list of CIDRs (a bare address is a /32 or /128).

    Strict: an entry with host bits set (``10.1.2.3/8``) is refused rather than silently
    widened or narrowed — it is usually a typo, and an allow list must mean what it says.
    """
    networks: list[Network] = []
    for entry in cidrs:
        text = entry.strip()
        try:
            networks.append(ip_network(text, strict=True))
        except ValueError as exc:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f"; did you mean {ip_network(text, strict=False)}?"
            raise ValueError(f"allow entry {entry!r} is not a network: {exc}{hint}") from None
    return tuple(networks)


def _allowed(addr: Address, allow: Sequence[Network]) -> bool:
    return any(addr in net for net in allow)


def _embedded(addr: IPv6Address) -> list[tuple[str, IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the name of its form."""
    low32 = IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _MAPPED:
        return [("IPv4-mapped", low32)]
    if addr in _NAT64 or addr in _NAT64_LOCAL:
        return [("NAT64", low32)]
    if addr in _COMPAT and int(addr) > 1:  # :: and ::1 are themselves, not IPv4
        return [("IPv4-compatible", low32)]
    if addr in _SIX_TO_FOUR:
        return [("6to4", IPv4Address((int(addr) >> 80) & 0xFFFFFFFF))]
    if addr in _TEREDO:
        server = IPv4Address((int(addr) >> 64) & 0xFFFFFFFF)
        client = IPv4Address(~int(addr) & 0xFFFFFFFF)
        return [("Teredo server", server), ("Teredo client", client)]
    return []


def _plain_reason(addr: Address) -> str | None:
    """The block reason of one address on its own (no unwrapping, no allow list)."""
    for net, reason in _V4_BLOCKS if addr.version == 4 else _V6_BLOCKS:
        if addr in net:
            return reason
    if isinstance(addr, IPv4Address):
        return None if addr.is_global else "reserved"
    return None if addr in _V6_GLOBAL_UNICAST else "reserved"


def _verdict(addr: Address, allow: Sequence[Network]) -> tuple[str, str] | None:
    """None if allowed, else (reason, how) — ``how`` names the embedded form, if one."""
    if isinstance(addr, IPv6Address) and addr.scope_id is not None:
        addr = IPv6Address(int(addr))  # the zone does not change what the address is
    if _allowed(addr, allow):
        return None
    forms = _embedded(addr) if isinstance(addr, IPv6Address) else []
    for form, inner in forms:
        if _allowed(inner, allow):
            continue
        reason = _plain_reason(inner)
        if reason is not None:
            return reason, f"{form} {inner}"
    if addr in _NAT64_LOCAL:
        return "private", ""
    if forms:
        return None
    reason = _plain_reason(addr)
    return None if reason is None else (reason, "")


def blocked_reason(addr: Address, allow: Sequence[Network] = ()) -> str | None:
    """Why ``addr`` may not be contacted, in a word (e.g. ``"private"``); None if it may."""
    verdict = _verdict(addr, allow)
    return None if verdict is None else verdict[0]


def _refusal(host: str, addr: Address, verdict: tuple[str, str], *, resolved: bool) -> UnsafeTarget:
    reason, how = verdict
    phrase = _PHRASES.get(reason, reason)
    if resolved:
        shown = f"{addr} ({how})" if how else str(addr)
        message = f"webhook host {host} resolves to {shown}, {phrase}"
    elif how:
        message = f"webhook host {host} is {how}, {phrase}"
    elif host != str(addr):
        message = f"webhook host {host} is {addr}, {phrase}"
    else:
        message = f"webhook host {host} is {phrase}"
    return UnsafeTarget(message, reason=reason)


def _ip_literal(host: str) -> Address | None:
    try:
        return ip_address(host.split("%", 1)[0])  # drop an IPv6 zone ("%25eth0" raw)
    except ValueError:
        return None


def check_url(url: str, allow: Sequence[Network] = ()) -> URL:
    """Parse a webhook URL and refuse what must never be contacted; return the parsed URL.

    Raises :class:`UnsafeTarget` for: an unparsable URL, a scheme other than http/https,
    no host or a host that is not a DNS name, ``user:password@`` (credentials belong in a
    header, and a URL is shown and logged more widely than a secret), a port outside
    1..65535, a legacy numeric IPv4 form (``2130706433``, ``0x7f.1``, ``127.1`` — the
    socket layer would map it onto an address nobody checked), and an IP-literal host that
    is blocked. Hostnames are not resolved here; :class:`SafeResolver` checks those.
    """
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        if "port" in str(exc).lower():  # yarl: "Port out of range 0-65535"
            raise UnsafeTarget("webhook URL port is out of range 1..65535", reason="port") from None
        raise UnsafeTarget("webhook URL is not a valid URL", reason="invalid") from None
    if parsed.scheme not in SCHEMES:
        shown = parsed.scheme or "(none)"
        raise UnsafeTarget(
            f"webhook URL scheme {shown!r} is not allowed; use https or http", reason="scheme"
        )
    host = parsed.raw_host
    if not host:
        raise UnsafeTarget("webhook URL has no host", reason="host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise UnsafeTarget(
            "webhook URL must not contain user:password@; send credentials in a header",
            reason="credentials",
        )
    if port is None or not 1 <= port <= 65535:
        raise UnsafeTarget(f"webhook URL port {port} is out of range 1..65535", reason="port")
    addr = _ip_literal(host) if ":" in host else _ip_literal(host.rstrip("."))
    if addr is not None:
        verdict = _verdict(addr, allow)
        if verdict is not None:
            raise _refusal(host, addr, verdict, resolved=False)
        if host.endswith("."):
            raise UnsafeTarget(
                f"webhook host {host} is not a canonical IP address; write {addr}",
                reason="numeric",
            )
        return parsed
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise UnsafeTarget("webhook URL host is not a valid host name", reason="host")
    try:
        socket.inet_aton(host.rstrip("."))
    except OSError:
        return parsed
    raise UnsafeTarget(
        f"webhook host {host} is a legacy numeric IPv4 form; write the dotted address",
        reason="numeric",
    )


class SafeResolver(AbstractResolver):
    """Resolve through ``inner`` and refuse the name if any address it gives is blocked.

    Raises :class:`UnsafeTarget` (not an ``OSError``, so aiohttp does not wrap it as a DNS
    error: it propagates out of ``session.post`` as is). Returns new results built from the
    parsed addresses, so what aiohttp connects to is exactly what was checked. ``inner``
    defaults to aiohttp's ThreadedResolver (``getaddrinfo`` in a thread), created on first
    use inside the running loop; an ``inner`` passed in is the caller's to close.
    """

    def __init__(
        self, allow: Sequence[Network] = (), inner: AbstractResolver | None = None
    ) -> None:
        self._allow: tuple[Network, ...] = tuple(allow)
        self._inner = inner
        self._owns_inner = inner is None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = ThreadedResolver()
        infos = await self._inner.resolve(host, port, family)
        if not infos:
            raise OSError(f"no address found for {host}")
        checked: list[ResolveResult] = []
        for info in infos:
            addr = _ip_literal(info["host"])
            if addr is None:
                raise UnsafeTarget(
                    f"webhook host {host} resolved to something that is not an IP address",
                    reason="unresolvable",
                )
            verdict = _verdict(addr, self._allow)
            if verdict is not None:
                raise _refusal(host, addr, verdict, resolved=True)
            checked.append(
                ResolveResult(
                    hostname=info["hostname"],
                    host=info["host"] if "%" in info["host"] else str(addr),
                    port=info["port"],
                    family=socket.AF_INET if addr.version == 4 else socket.AF_INET6,
                    proto=info["proto"],
                    flags=info["flags"],
                )
            )
        return checked

    async def close(self) -> None:
        if self._owns_inner and self._inner is not None:
            await self._inner.close()
