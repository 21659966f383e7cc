"""Fitting text from agents and users into what receiving services accept: lengths counted in
UTF-16 code units (what JavaScript-based services count; never fewer than code points), cuts
that never leave half an escape or a surrogate pair, per-service escaping, and times and
numbers for people. Pure functions; ``formats`` uses them per delivery, so they stay cheap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

ELLIPSIS: Final = "…"
TEAMS_TEXT: Final = 2000
"""Our own cap per Teams text: keeps the card far below Teams' 28 KB."""
_MIN_TS: Final = 0.0
_MAX_TS: Final = 253402300799.0  # 9999-12-31T23:59:59Z


def units(text: str) -> int:
    """Length in UTF-16 code units."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def prefix(text: str, units: int) -> str:
    if text.isascii():
        return text[:units]
    # "ignore" drops a surrogate pair cut in half (and any lone surrogate).
    return text.encode("utf-16-le", "surrogatepass")[: units * 2].decode("utf-16-le", "ignore")


def cut(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` UTF-16 units, else its prefix + ``…``."""
    if units(text) <= limit:
        return text
    return prefix(text, limit - 1) + ELLIPSIS


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters escaped (no links, mentions or channels)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut_escaped(escaped: str, limit: int) -> str:
    """Escaped Slack text within ``limit``; a cut never leaves half an entity like ``&am``."""
    if units(escaped) <= limit:
        return escaped
    head = prefix(escaped, limit - 1)
    amp = head.rfind("&", max(0, len(head) - 4))
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head + ELLIPSIS


_DISCORD_MD: Final = "\\*_~`|<>[]()#:"
"""Discord markdown punctuation, backslash-escaped (``:`` too: no auto-linked URLs). The
backslash comes first. One ``str.replace`` per character beats ``translate`` and ``re.sub``
by 5x on long text."""


def discord_escape(text: str, limit: int) -> str:
    """Markdown punctuation backslash-escaped, within ``limit``; no dangling backslash."""
    escaped = text
    for char in _DISCORD_MD:
        if char in escaped:
            escaped = escaped.replace(char, "\\" + char)
    if units(escaped) <= limit:
        return escaped
    head = prefix(escaped, limit - 1)
    trailing = len(head) - len(head.rstrip("\\"))
    if trailing % 2:
        head = head[:-1]
    return head + ELLIPSIS


def teams_safe(text: str, limit: int = TEAMS_TEXT) -> str:
    """``text`` within ``limit`` with ``](`` broken, so it cannot form a markdown link."""
    return cut(text.replace("](", "]\u200b("), limit)


def clamp(ts: float) -> float:
    if not ts >= _MIN_TS:  # also NaN
        return _MIN_TS
    return min(ts, _MAX_TS)


def iso(ts: float) -> str:
    moment = datetime.fromtimestamp(clamp(ts), tz=UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def num(value: float) -> str:
    """A number for people: ``93.4568``, ``12``, ``1500000000``; exponent only when extreme."""
    value = float(value)
    size = abs(value)
    if value.is_integer() and size < 1e16:
        return str(int(value))
    if 1e6 <= size < 1e16:
        return f"{value:.0f}"
    return f"{value:.6g}"


def value_text(value: float | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else num(value)
