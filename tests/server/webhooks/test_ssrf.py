"""SSRF rules as tables: every blocked class in IPv4 and IPv6, in every wrapped form, the
metadata addresses, public addresses that stay allowed, allow-list exemptions, URL shapes,
allow-list parsing, and the resolver with a stub inner resolver. Nothing here opens a
connection: addresses are only classified (the end-to-end "blocked before connecting"
proofs, on loopback, are in test_client.py)."""

from __future__ import annotations

import socket
from ipaddress import ip_address, ip_network

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from server.webhooks.ssrf import (
    URL_REASONS,
    SafeResolver,
    UnsafeTarget,
    blocked_reason,
    check_url,
    parse_networks,
)

LOOPBACK_ALLOWED = parse_networks(["127.0.0.0/8"])

# -------------------------------------------------------------------- address classification

BLOCKED = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.254", "cgnat"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.0.8", "reserved"),
    ("192.88.99.1", "reserved"),
    ("192.0.2.10", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.99", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    # cloud metadata — 168.63.129.16 is otherwise a public address
    ("169.254.169.254", "metadata"),
    ("168.63.129.16", "metadata"),
    ("100.100.100.200", "metadata"),
    ("fd00:ec2::254", "metadata"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd12:3456:789a::1", "private"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("100::1", "reserved"),
    ("4000::1", "reserved"),
    ("::ffff:0:1.2.3.4", "reserved"),  # SIIT: Python's is_global says True; 2000::/3 says no
    # IPv4-mapped
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:0.0.0.0", "unspecified"),
    # IPv4-compatible (deprecated)
    ("::127.0.0.1", "loopback"),
    ("::10.0.0.1", "private"),
    ("::2", "unspecified"),
    # NAT64, well-known and local-use prefixes
    ("64:ff9b::127.0.0.1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "metadata"),
    ("64:ff9b::c0a8:101", "private"),
    ("64:ff9b:1::7f00:1", "loopback"),
    ("64:ff9b:1::5db8:d70e", "private"),  # local-use: blocked whatever it embeds
    # 6to4 (2002:AABB:CCDD::/48 carries AA.BB.CC.DD)
    ("2002:7f00:1::", "loopback"),
    ("2002:a00:1::1", "private"),
    ("2002:a9fe:a9fe::1", "metadata"),
    # Teredo: server bits 32..63, client = NOT of the low 32 bits
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation"),  # client 192.0.2.45
    ("2001:0:4136:e378::80ff:fffe", "loopback"),  # client ~80ff:fffe = 127.0.0.1
    ("2001:0:7f00:1::5db8:d70e", "loopback"),  # server 127.0.0.1
    ("2001:0:a00:1::a247:28f1", "private"),  # server 10.0.0.1
]

ALLOWED = [
    "93.184.215.14",
    "1.1.1.1",
    "8.8.8.8",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.32.0.1",  # just above 172.16.0.0/12
    "169.253.255.255",
    "223.255.255.255",  # just below multicast
    "2606:4700::1111",
    "2a00:1450:4001:81c::200e",
    "::ffff:93.184.215.14",
    "64:ff9b::5db8:d70e",
    "2002:5db8:d70e::1",
    "2001:0:4136:e378:8000:63bf:a247:28f1",  # server and client both public
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_blocked_address_classes(address: str, reason: str) -> None:
    assert blocked_reason(ip_address(address)) == reason


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(ip_address(address)) is None


@pytest.mark.parametrize(
    ("address", "allow", "reason"),
    [
        ("127.0.0.1", ["127.0.0.0/8"], None),
        ("127.0.0.1", ["127.0.0.1"], None),
        ("127.0.0.2", ["127.0.0.1"], "loopback"),
        ("::ffff:127.0.0.1", ["127.0.0.0/8"], None),  # allow applies to the unwrapped form
        ("::127.0.0.1", ["127.0.0.0/8"], None),
        ("64:ff9b::127.0.0.1", ["127.0.0.0/8"], None),
        ("::ffff:127.0.0.1", ["::ffff:0:0/96"], None),  # ... and to the address itself
        ("::1", ["127.0.0.0/8"], "loopback"),  # ::1 is not 127.0.0.1
        ("10.1.2.3", ["10.0.0.0/8"], None),
        ("10.1.2.3", ["127.0.0.0/8"], "private"),
        ("10.1.2.3", ["::/0"], "private"),  # a v6 network never covers a v4 address
        ("fd00::1", ["fc00::/7"], None),
        ("169.254.169.254", ["169.254.0.0/16"], None),  # allow wins, metadata included
        # Teredo: one allowed form is not enough, both must pass
        ("2001:0:7f00:1::a247:28f1", ["127.0.0.0/8"], None),  # server loopback (allowed)
        ("2001:0:7f00:1::f5ff:fffe", ["127.0.0.0/8"], "private"),  # client 10.0.0.1
    ],
)
def test_allow_list_exemptions(address: str, allow: list[str], reason: str | None) -> None:
    assert blocked_reason(ip_address(address), parse_networks(allow)) == reason


def test_every_blocked_class_is_blocked_in_every_wrapped_form() -> None:
    """Each blocked IPv4 class stays blocked when mapped, compat, NAT64, 6to4 or Teredo."""
    v4_cases = [(a, r) for a, r in BLOCKED if ":" not in a]
    for address, reason in v4_cases:
        v4 = int(ip_address(address))
        wrapped = [
            (0xFFFF << 32) | v4,  # ::ffff:a.b.c.d
            (0x64FF9B << 96) | v4,  # 64:ff9b::a.b.c.d
            (0x2002 << 112) | (v4 << 80) | 1,  # 2002:AABB:CCDD::1
            (0x20010000 << 96) | (v4 << 64) | 0x5DB8D70E ^ 0xFFFFFFFF,  # Teredo server
            (0x20010000 << 96) | (0x5DB8D70E << 64) | (v4 ^ 0xFFFFFFFF),  # Teredo client
        ]
        if v4 > 1:  # ::0 and ::1 are the IPv6 unspecified and loopback addresses
            wrapped.append(v4)  # ::a.b.c.d
        for number in wrapped:
            six = ip_address(number)
            assert blocked_reason(six) == reason, f"{six} wraps {address}"


# ----------------------------------------------------------------------------- check_url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("example.com/hook", "scheme"),
        ("http:///hook", "host"),
        ("https://user:pass@example.com/hook", "credentials"),
        ("https://user@example.com/hook", "credentials"),
        ("https://:pass@example.com/hook", "credentials"),
        ("https://example.com:0/hook", "port"),
        ("https://example.com:65536/hook", "port"),
        ("https://example.com:99999999/hook", "port"),
        ("https://[::1/hook", "invalid"),
        ("https://exa mple.com/hook", "host"),
        ("https://exa_mple..com/hook", "host"),
        ("http://2130706433/", "numeric"),  # 127.0.0.1 as one number
        ("http://0x7f.1/", "numeric"),
        ("http://127.1/", "numeric"),
        ("http://017700000001/", "numeric"),
        ("http://1.1.1.1./", "numeric"),
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.0.0.1./hook", "loopback"),
        ("http://10.0.0.1:8080/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://[::ffff:7f00:1]/hook", "loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/hook", "metadata"),
        ("http://[fe80::1%25eth0]/hook", "link-local"),
        ("http://[fd00:ec2::254]/hook", "metadata"),
    ],
)
def test_check_url_rejections(url: str, reason: str) -> None:
    with pytest.raises(UnsafeTarget) as caught:
        check_url(url)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "http://example.com/hook?x=1",
        "HTTPS://Example.COM:8443/hook",
        "https://93.184.215.14/hook",
        "https://[2606:4700::1111]/hook",
        "https://xn--bcher-kva.example/hook",
        "https://bücher.example/hook",
        "https://internal.test./hook",  # a trailing dot on a name is fine
        "https://hooks_1.example.com/",
    ],
)
def test_check_url_accepts_public_targets(url: str) -> None:
    parsed = check_url(url)
    assert parsed.scheme in ("http", "https")


def test_check_url_allow_list_permits_loopback_literal() -> None:
    url = check_url("http://127.0.0.1:8080/hook", LOOPBACK_ALLOWED)
    assert (url.host, url.port, url.path) == ("127.0.0.1", 8080, "/hook")
    check_url("http://[::ffff:127.0.0.1]:8080/hook", LOOPBACK_ALLOWED)


def test_check_url_messages_are_clear_and_hold_no_path_or_query() -> None:
    cases = {
        "http://10.0.0.5/T0KEN?sig=S3CRET": "webhook host 10.0.0.5 is a private address",
        "http://[::ffff:127.0.0.1]/T0KEN?sig=S3CRET": (
            "webhook host ::ffff:7f00:1 is IPv4-mapped 127.0.0.1, a loopback address"
        ),
        "ftp://example.com/T0KEN?sig=S3CRET": (
            "webhook URL scheme 'ftp' is not allowed; use https or http"
        ),
        "https://u:S3CRET@example.com/T0KEN": (
            "webhook URL must not contain user:password@; send credentials in a header"
        ),
    }
    for url, message in cases.items():
        with pytest.raises(UnsafeTarget) as caught:
            check_url(url)
        assert str(caught.value) == message
        assert "T0KEN" not in str(caught.value)
        assert "S3CRET" not in str(caught.value)


def test_url_reasons_are_the_shape_reasons() -> None:
    assert {"invalid", "scheme", "host", "credentials", "port", "numeric"} == URL_REASONS
    assert all(reason not in URL_REASONS for _, reason in BLOCKED)


# ------------------------------------------------------------------------ parse_networks


def test_parse_networks() -> None:
    assert parse_networks([]) == ()
    assert parse_networks(["127.0.0.0/8", " ::1 ", "10.0.0.7", "fc00::/7"]) == (
        ip_network("127.0.0.0/8"),
        ip_network("::1/128"),
        ip_network("10.0.0.7/32"),
        ip_network("fc00::/7"),
    )


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("10.1.2.3/8", "did you mean 10.0.0.0/8?"),  # host bits: strict
        ("fd00::1/8", "did you mean fd00::/8?"),
        ("localhost", "'localhost'"),
        ("10.0.0.0/33", "'10.0.0.0/33'"),
        ("", "''"),
        ("300.1.1.1", "'300.1.1.1'"),
    ],
)
def test_parse_networks_names_the_bad_entry(entry: str, words: str) -> None:
    with pytest.raises(ValueError, match="allow entry") as caught:
        parse_networks(["127.0.0.0/8", entry])
    assert words in str(caught.value)


# ------------------------------------------------------------------------- SafeResolver


class StubResolver(AbstractResolver):
    """Fixed answers by name; an unknown name fails like DNS does. No network."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_returns_exactly_the_checked_addresses() -> None:
    stub = StubResolver({"api.example": ["93.184.215.14", "2606:4700:0:0::1111"]})
    resolver = SafeResolver((), stub)
    results = await resolver.resolve("api.example", 443, socket.AF_UNSPEC)
    assert [(r["host"], r["port"], r["family"]) for r in results] == [
        ("93.184.215.14", 443, socket.AF_INET),
        ("2606:4700::1111", 443, socket.AF_INET6),
    ]
    assert stub.calls == ["api.example"]
    await resolver.close()
    assert not stub.closed  # the caller's resolver is the caller's to close


@pytest.mark.parametrize(
    ("answers", "reason", "message"),
    [
        (
            ["10.0.0.5"],
            "private",
            "webhook host api.example resolves to 10.0.0.5, a private address",
        ),
        (
            ["93.184.215.14", "127.0.0.1"],  # one bad address among good ones is enough
            "loopback",
            "webhook host api.example resolves to 127.0.0.1, a loopback address",
        ),
        (
            ["::ffff:169.254.169.254"],
            "metadata",
            "webhook host api.example resolves to ::ffff:a9fe:a9fe (IPv4-mapped "
            "169.254.169.254), a cloud metadata address",
        ),
        (
            ["not-an-address"],
            "unresolvable",
            "webhook host api.example resolved to something that is not an IP address",
        ),
    ],
)
async def test_resolver_refuses_a_name_with_any_blocked_address(
    answers: list[str], reason: str, message: str
) -> None:
    resolver = SafeResolver((), StubResolver({"api.example": answers}))
    with pytest.raises(UnsafeTarget) as caught:
        await resolver.resolve("api.example", 443)
    assert caught.value.reason == reason
    assert str(caught.value) == message
    assert not isinstance(caught.value, OSError)  # else aiohttp would wrap it as a DNS error


async def test_resolver_allow_list() -> None:
    stub = StubResolver({"internal.test": ["127.0.0.1", "::ffff:127.0.0.2"]})
    results = await SafeResolver(LOOPBACK_ALLOWED, stub).resolve("internal.test", 8080)
    assert [r["host"] for r in results] == ["127.0.0.1", "::ffff:7f00:2"]


async def test_resolver_dns_failures_stay_oserrors() -> None:
    resolver = SafeResolver((), StubResolver({"empty.test": []}))
    with pytest.raises(socket.gaierror):
        await resolver.resolve("unknown.test", 443)
    with pytest.raises(OSError, match="no address"):
        await resolver.resolve("empty.test", 443)


async def test_default_inner_resolver_is_created_in_the_loop() -> None:
    """Without an inner resolver, aiohttp's ThreadedResolver is used: localhost (from the
    hosts file, no network) is refused."""
    resolver = SafeResolver()
    with pytest.raises(UnsafeTarget) as caught:
        await resolver.resolve("localhost", 80)
    assert caught.value.reason == "loopback"
    await resolver.close()
