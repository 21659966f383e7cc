"""Summary templates for alert rules: pre-parsed, rendered without evaluating user text.

``"Disk {labels.mount} is {value:.0f}% full"``: only the fixed placeholders ``{value}``,
``{threshold}``, ``{clear}``, ``{rule}``, ``{metric}``, ``{severity}`` and ``{labels.<name>}``
exist, with simple format specs checked at parse time. ``str.format`` is never called on a
user's template, so attribute access such as ``{value.__class__}`` cannot happen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

MAX_RENDERED_CHARS: Final = 1000


def show_untrusted(value: object, limit: int = 40) -> str:
    """A short, quoted rendering of untrusted input for error messages."""
    if isinstance(value, str):
        text = json.dumps(value[:limit], ensure_ascii=False)
        return text[:-1] + '…"' if len(value) > limit else text
    return type(value).__name__


_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_PLACEHOLDER = re.compile(
    r"(?P<field>value|threshold|clear|rule|metric|severity|labels\.(?P<label>[A-Za-z_][A-Za-z0-9_]{0,63}))"
    r"(?::(?P<spec>.*))?",
    re.DOTALL,
)
NUMERIC_FIELDS = frozenset({"value", "threshold", "clear"})
_NUMBER_SPEC = re.compile(r"[<>^]?[0-9]{0,2}(?:\.[0-9]{1,2})?[fge%]?")
_TEXT_SPEC = re.compile(r"[<>^]?[0-9]{0,2}")
MISSING_NUMBER: Final = "n/a"
"""How a number that has no value (a vanished series, an unset clear level) renders."""

TemplateValue = str | float | None


@dataclass(frozen=True, slots=True)
class Placeholder:
    field: str
    """value, threshold, clear, rule, metric, severity, or labels (then ``label`` is set)."""
    label: str = ""
    spec: str = ""


def _format_number(value: float) -> str:
    rounded = round(float(value), 4)
    if rounded.is_integer() and abs(rounded) < 1e15:
        return str(int(rounded))
    return repr(rounded)


@dataclass(frozen=True, slots=True)
class Template:
    """A pre-parsed summary template. Rendering never evaluates user text: only the fixed
    placeholders are substituted, with format specs checked at parse time."""

    source: str
    parts: tuple[str | Placeholder, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Raises ValueError naming the first bad placeholder or stray brace."""
        parts: list[str | Placeholder] = []
        literal: list[str] = []
        pos = 0
        for token in _TOKEN.finditer(text):
            literal.append(text[pos : token.start()])
            pos = token.end()
            raw = token.group(0)
            if raw in ("{{", "}}"):
                literal.append(raw[0])
                continue
            if raw in ("{", "}"):
                raise ValueError(
                    f"unbalanced {raw!r} at position {token.start()} (write {raw * 2})"
                )
            inner = token.group(1)
            match = _PLACEHOLDER.fullmatch(inner)
            if match is None:
                raise ValueError(
                    f"unknown placeholder {show_untrusted('{' + inner + '}')} (known: {{value}}, "
                    "{threshold}, {clear}, {rule}, {metric}, {severity}, {labels.<name>})"
                )
            name = match["field"]
            spec = match["spec"] or ""
            kind = "labels" if match["label"] else name
            spec_re = _NUMBER_SPEC if kind in NUMERIC_FIELDS else _TEXT_SPEC
            if not spec_re.fullmatch(spec):
                raise ValueError(f"unsupported format spec {show_untrusted(spec)} in {{{name}}}")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(Placeholder(kind, match["label"] or "", spec))
        literal.append(text[pos:])
        if "".join(literal):
            parts.append("".join(literal))
        return cls(text, tuple(p for p in parts if p != ""))

    def placeholders(self) -> Iterator[Placeholder]:
        return (p for p in self.parts if isinstance(p, Placeholder))

    def render(self, values: Mapping[str, TemplateValue], labels: Mapping[str, str]) -> str:
        """Substitute placeholders; a missing label renders empty, a missing number as "n/a".
        The result is cut to MAX_RENDERED_CHARS."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value: TemplateValue
            value = labels.get(part.label, "") if part.field == "labels" else values.get(part.field)
            if value is None:
                out.append(MISSING_NUMBER)
            elif isinstance(value, str):
                out.append(format(value, part.spec) if part.spec else value)
            else:
                out.append(format(value, part.spec) if part.spec else _format_number(value))
        text = "".join(out)
        return text if len(text) <= MAX_RENDERED_CHARS else text[: MAX_RENDERED_CHARS - 1] + "…"
