"""Making configured names (certificate files, process names) fit their label pattern."""

from __future__ import annotations

import re

_DISALLOWED = re.compile(r"[^A-Za-z0-9_.+-]")
MAX_NAME = 32


def name_label(raw: str) -> str:
    """Replace characters the ``process``/``cert`` label patterns refuse with "_", cut to 32."""
    cleaned = _DISALLOWED.sub("_", raw)[:MAX_NAME]
    return cleaned or "_"


def unique_labels(raws: list[str]) -> list[str]:
    """``name_label`` for each, with "-2", "-3"... appended where two would collide."""
    seen: set[str] = set()
    out: list[str] = []
    for raw in raws:
        base = name_label(raw)
        label, n = base, 1
        while label in seen:
            n += 1
            suffix = f"-{n}"
            label = base[: MAX_NAME - len(suffix)] + suffix
        seen.add(label)
        out.append(label)
    return out
