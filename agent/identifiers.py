"""Detectors for things that identify people or their devices, used by the privacy gate.

``identifier_kind(text)`` names the first kind found, or None. The text is normalised first so
that look-alike spellings do not slip through: Unicode NFKC (full-width digits and ``＠``),
invisible format characters removed, ideographic dots made ASCII, percent-encoding decoded.
Detection errs towards refusing: a false positive withholds a summary; a false negative would
leak a person.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import unquote

_DOTS = str.maketrans({"。": ".", "．": ".", "｡": ".", "︒": "."})

_IPV4 = re.compile(r"(?<![0-9])(?:[0-9]{1,3}[.\-_]){3}[0-9]{1,3}(?![0-9])")
"""Dotted quads, and the ``10-1-2-3`` / ``10_1_2_3`` forms used in host names."""
_IPV4_HEX = re.compile(r"(?i)\b0x[0-9a-f]{8}\b")
_PROC_ADDR = re.compile(
    r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):[0-9A-Fa-f]{4}(?![0-9A-Fa-f])"
)
"""The hex ``address:port`` form of /proc/net/tcp and friends."""
_V6_CANDIDATE = re.compile(r"\[?[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.%]*\]?")
_V6_LITERAL_NAME = re.compile(r"(?i)[0-9a-f-]{2,}\.ipv6-literal\.net")
_MAC = re.compile(
    r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[:\-_ ]){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f])"
    r"|(?<![0-9A-Fa-f])[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}(?![0-9A-Fa-f])"
)
_BARE_MAC = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{12}(?![0-9A-Za-z])")
"""Twelve hex digits with at least one letter (a bare number of 12 digits is just a number)."""
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
_KEY_RUN = re.compile(r"[A-Za-z0-9+/=-]{24,}")
_BASE32_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Z2-7]{32,}={0,6}(?![A-Za-z0-9])")
_ALNUM_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{32,}(?![A-Za-z0-9])")
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{24,}(?![0-9A-Za-z])")
_PEM = re.compile(r"-----BEGIN|PRIVATE KEY")
_ACCOUNT = re.compile(
    r"(?i)\b(?:user(?:name)?|login|uid|cn|common[_ ]?name|account|email|peer|client)\s*[=:]\s*\S"
)
_DEVICE = re.compile(
    r"(?i)\b[\w-]+\.(?:local|lan|home|localdomain|internal)\b"
    r"|\b(?:DESKTOP|LAPTOP)-[\w-]+"
    r"|[\w-]*(?:iPhone|iPad|MacBook|iMac|Galaxy|Pixel|Android)[\w-]*"
)
_PERSONAL_PATH = re.compile(r"/(?:home|Users|run/user|media)/[^/\s]+|/ccd/[^/\s]+")
"""Home directories, and OpenVPN client-config directories (whose file names are users)."""


def normalise(text: str) -> str:
    """What the detectors look at: NFKC, no invisible format characters, ASCII dots,
    percent-encoding decoded (twice, for double encoding)."""
    text = unicodedata.normalize("NFKC", text).translate(_DOTS)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    if "%" in text:
        text = unquote(unquote(text))
    return text


def _ipv6(text: str) -> bool:
    for candidate in _V6_CANDIDATE.findall(text):
        token = candidate.strip("[]").split("%", 1)[0]
        if token.count(":") >= 2:
            try:
                ipaddress.IPv6Address(token)
            except ValueError:
                continue
            return True
    return bool(_V6_LITERAL_NAME.search(text))


def _looks_random(run: str) -> bool:
    """A long base64-alphabet run that is a key, not a name: padded (``=``), with ``+``, with
    digits and both cases, or very long with both cases. snake_case names have underscores and
    never match the run at all."""
    upper = any(c.isupper() for c in run)
    lower = any(c.islower() for c in run)
    return (
        run.endswith("=")
        or "+" in run
        or (upper and lower and any(c.isdigit() for c in run))
        or (len(run) >= 40 and upper and lower)
    )


def _key(text: str) -> bool:
    if _PEM.search(text) or _HEX_RUN.search(text) or _BASE32_RUN.search(text):
        return True
    if any(_looks_random(run) for run in _KEY_RUN.findall(text)):
        return True
    return any(
        any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
        for run in _ALNUM_RUN.findall(text)
    )


def identifier_kind(text: str) -> str | None:
    """Name the kind of personal identifier ``text`` contains, or None if it looks clean."""
    text = normalise(text)
    if _IPV4.search(text) or _IPV4_HEX.search(text):
        return "ipv4 address"
    if _PROC_ADDR.search(text):
        return "ip address (kernel hex form)"
    if _ipv6(text):
        return "ipv6 address"
    if _MAC.search(text) or any(any(c.isalpha() for c in m) for m in _BARE_MAC.findall(text)):
        return "mac address"
    if _EMAIL.search(text):
        return "e-mail address"
    if _key(text):
        return "key"
    if _ACCOUNT.search(text):
        return "account name"
    if _DEVICE.search(text):
        return "device host name"
    if _PERSONAL_PATH.search(text):
        return "personal path"
    return None
