"""Alert rules: the rule model, the rules-file loader and its validation, durations, summaries.

A rules file is TOML::

    include_defaults = true          # keep the built-in rules (agent/default_rules.toml)
    [[rule]]
    name = "disk_nearly_full"
    metric = "disk_used_percent"
    labels = { mount = "/" }
    op = ">"
    threshold = 90
    clear = 85
    for = "2m"
    summary = "Disk {labels.mount} is {value:.0f}% full"

Everything is checked at load time: unknown keys, unknown metrics and labels, bad values, summary
placeholders. All problems are collected into one ``RulesError`` whose messages name the file, the
rule (name and 1-based index) and the field. Rules pushed by the server go through the same
validation (``rules_from_dicts``). A user rule with the name of a built-in one replaces it;
``disabled = true`` drops it. Disabled rules never reach the ``RuleSet``.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast, get_args

from agent.metrics import METRICS
from agent.samples import Labels
from agent.templates import NUMERIC_FIELDS, Template, show_untrusted

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Reduce = Literal["last", "avg", "min", "max"]
Severity = Literal["info", "warning", "critical"]

OPS: Final[tuple[str, ...]] = get_args(Op)
REDUCERS: Final[tuple[str, ...]] = get_args(Reduce)
SEVERITIES: Final[tuple[str, ...]] = get_args(Severity)

MAX_RULES: Final = 500
MAX_SUMMARY_CHARS: Final = 300
MAX_DURATION_SECONDS: Final = 366 * 86400.0
MAX_ABS_NUMBER: Final = 1e18
MAX_LABEL_MATCHERS: Final = 8
MAX_LABEL_VALUE_CHARS: Final = 128
DEFAULTS_SOURCE: Final = "default_rules.toml (built-in)"

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TOP_LEVEL_KEYS = frozenset({"include_defaults", "rule"})
_RULE_KEYS = frozenset(
    {
        "name",
        "metric",
        "labels",
        "op",
        "threshold",
        "clear",
        "for",
        "keep_firing_for",
        "reduce",
        "window",
        "severity",
        "summary",
        "disabled",
        "absent_for",
    }
)
_NOT_IN_ABSENT = ("op", "threshold", "clear", "reduce", "window", "for", "keep_firing_for")


class RulesError(Exception):
    """Invalid rules. ``errors`` holds every problem found, each naming file, rule and field."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "\n".join(self.errors)


# --- durations -------------------------------------------------------------------------------

_DURATION = re.compile(
    r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string like "30s", "5m", "2h", "1d", "1m30s".

    Units come in the order d h m s, each at most once. Raises ValueError with a short reason.
    """
    if isinstance(value, bool):
        raise ValueError("duration is not a number or a string")
    if isinstance(value, int | float):
        seconds = _finite(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 32:
            raise ValueError("duration is too long")
        if text.startswith("-"):
            raise ValueError("duration must not be negative")
        if _PLAIN_NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            match = _DURATION.fullmatch(text)
            if not text or match is None:
                raise ValueError(
                    f"invalid duration {show_untrusted(value)} "
                    '(use seconds, or e.g. "30s", "5m", "2h", "1d", "1m30s")'
                )
            seconds = sum(float(n) * _UNIT_SECONDS[u] for u, n in match.groupdict().items() if n)
    else:
        raise ValueError("duration is not a number or a string")
    if seconds < 0:
        raise ValueError("duration must not be negative")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError("duration is longer than 366 days")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for whole seconds: 90 -> "1m30s"."""
    rest = round(seconds)
    if rest == 0:
        return "0s"
    out = []
    for unit, size in _UNIT_SECONDS.items():
        n, rest = divmod(rest, int(size))
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


# --- the rule model --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated, enabled rule. Durations are in seconds.

    A threshold rule has ``op`` and ``threshold`` (and ``absent_for`` None); an absent rule has
    ``absent_for`` and no op/threshold/clear/reduce. ``labels`` is an exact-match filter.
    """

    name: str
    metric: str
    summary: Template
    severity: Severity = "warning"
    labels: Labels = ()
    op: Op | None = None
    threshold: float | None = None
    clear: float | None = None
    for_seconds: float = 0.0
    keep_firing_for: float = 0.0
    reduce: Reduce = "last"
    window: float = 0.0
    absent_for: float | None = None
    source: str = field(default="", compare=False)
    """Where the rule came from (file name, built-in, server push); not part of its identity."""

    @property
    def is_absent(self) -> bool:
        return self.absent_for is not None

    @property
    def clear_level(self) -> float | None:
        """The level a firing alert must cross to resolve: ``clear``, else ``threshold``."""
        return self.clear if self.clear is not None else self.threshold


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)


# --- validation ------------------------------------------------------------------------------


def _finite(value: int | float) -> float:
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("value is out of range") from None
    if not math.isfinite(number):
        raise ValueError("value must be a finite number")
    if abs(number) > MAX_ABS_NUMBER:
        raise ValueError("value is out of range")
    return number


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("value is not a number")
    return _finite(value)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"value is not a string (got {show_untrusted(value)})")
    return value


def _name(value: object) -> str:
    text = _string(value)
    if not _NAME.fullmatch(text):
        raise ValueError(f"{show_untrusted(text)} is not 1-64 characters of A-Z a-z 0-9 _ . -")
    return text


def _metric(value: object) -> str:
    text = _string(value)
    if text not in METRICS:
        import difflib  # only for the error message; keeps the agent's footprint small

        close = difflib.get_close_matches(text[:64], METRICS, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise ValueError(f"unknown metric {show_untrusted(text)}{hint}")
    return text


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("value is not true or false")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _string(value)
        if text not in choices:
            raise ValueError(f"{show_untrusted(text)} is not one of {', '.join(choices)}")
        return text

    return parse


def _label_matchers(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError('value is not a table of label = "value"')
    if len(value) > MAX_LABEL_MATCHERS:
        raise ValueError(f"more than {MAX_LABEL_MATCHERS} labels")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValueError(f"label {show_untrusted(key)}: label names and values must be strings")
        if not 1 <= len(item) <= MAX_LABEL_VALUE_CHARS:
            raise ValueError(
                f"label {show_untrusted(key)}: value must be 1-{MAX_LABEL_VALUE_CHARS} chars"
            )
        out[key] = item
    return out


def _summary(value: object) -> Template:
    text = _string(value)
    if len(text) > MAX_SUMMARY_CHARS:
        raise ValueError(f"summary is longer than {MAX_SUMMARY_CHARS} characters")
    return Template.parse(text)


T = TypeVar("T")


class _RuleReader:
    """Reads one raw rule table, recording every problem instead of stopping at the first."""

    def __init__(self, raw: Mapping[Any, Any], prefix: str, errors: list[str]) -> None:
        self.raw = raw
        self.prefix = prefix
        self.errors = errors
        self.ok = True

    def error(self, key: str, message: str) -> None:
        self.ok = False
        self.errors.append(f'{self.prefix}: field "{key}": {message}')

    def get(self, key: str, parse: Callable[[object], T]) -> T | None:
        if key not in self.raw:
            return None
        try:
            return parse(self.raw[key])
        except ValueError as exc:
            self.error(key, str(exc))
            return None

    def require(self, key: str, value: object, why: str = "") -> None:
        if value is None and key not in self.raw:
            self.error(key, f"required{why}")


def _parse_rule(raw: object, index: int, source: str, errors: list[str]) -> tuple[str, Rule | None]:
    """Returns (name, rule) — rule None for a disabled rule — or ("", None) after errors."""
    if not isinstance(raw, Mapping):
        errors.append(f"{source}: rule #{index}: not a table (got {type(raw).__name__})")
        return "", None
    raw_name = raw.get("name")
    named = isinstance(raw_name, str) and _NAME.fullmatch(raw_name) is not None
    prefix = f'{source}: rule "{raw_name}" (#{index})' if named else f"{source}: rule #{index}"
    r = _RuleReader(raw, prefix, errors)
    for key in raw:
        if key not in _RULE_KEYS:
            shown = show_untrusted(key) if isinstance(key, str) else show_untrusted(str(key))
            errors.append(f"{prefix}: field {shown}: unknown field")
            r.ok = False
    name = r.get("name", _name)
    r.require("name", name)
    disabled = r.get("disabled", _bool) or False
    metric = r.get("metric", _metric)
    matchers = r.get("labels", _label_matchers) or {}
    op = cast(Op | None, r.get("op", _choice(OPS)))
    threshold = r.get("threshold", _number)
    clear = r.get("clear", _number)
    for_seconds = r.get("for", parse_duration) or 0.0
    keep = r.get("keep_firing_for", parse_duration) or 0.0
    reduce_given = cast(Reduce | None, r.get("reduce", _choice(REDUCERS)))
    reduce: Reduce = reduce_given or "last"
    window = r.get("window", parse_duration)
    severity = cast(Severity, r.get("severity", _choice(SEVERITIES)) or "warning")
    summary = r.get("summary", _summary)
    absent_for = r.get("absent_for", parse_duration)
    absent = "absent_for" in raw

    if metric is not None:
        known = METRICS[metric].labels
        for label in matchers:
            if label not in known:
                r.error("labels", _label_hint(label, metric, known))
        for ph in summary.placeholders() if summary else ():
            if ph.field == "labels" and ph.label not in known:
                r.error("summary", _label_hint(ph.label, metric, known))
    if absent:
        for key in _NOT_IN_ABSENT:
            if key in raw:
                r.error(key, "not allowed in an absent rule (absent_for is set)")
        if absent_for is not None and absent_for <= 0:
            r.error("absent_for", "must be greater than 0")
        for ph in summary.placeholders() if summary else ():
            if ph.field in NUMERIC_FIELDS:
                r.error("summary", f"placeholder {{{ph.field}}} is not available in an absent rule")
    else:
        if op in ("==", "!=") and "clear" in raw:
            r.error("clear", f'not allowed with op "{op}" (clear needs an ordering op)')
        elif op is not None and threshold is not None and clear is not None:
            if op in (">", ">=") and clear > threshold:
                r.error("clear", f'must be <= threshold ({threshold:g}) for a "{op}" rule')
            if op in ("<", "<=") and clear < threshold:
                r.error("clear", f'must be >= threshold ({threshold:g}) for a "{op}" rule')
        if reduce != "last" and window is None and "window" not in raw:
            r.error("window", f'required when reduce is "{reduce}"')
        reduce_bad = "reduce" in raw and reduce_given is None
        if "window" in raw and reduce == "last" and not reduce_bad:
            r.error("window", "only allowed with reduce = avg, min or max")
        if window is not None and window <= 0:
            r.error("window", "must be greater than 0")
    if not disabled:
        r.require("metric", metric)
        if not absent:
            r.require("op", op, " (or absent_for for an absent-data rule)")
            r.require("threshold", threshold)
    if not r.ok or name is None:
        return "", None
    if disabled:
        return name, None
    assert metric is not None
    if summary is None:
        summary = Template.parse(_default_summary(metric, op, absent_for))
    return name, Rule(
        name=name,
        metric=metric,
        summary=summary,
        severity=severity,
        labels=tuple(sorted(matchers.items())),
        op=op,
        threshold=threshold,
        clear=clear,
        for_seconds=for_seconds,
        keep_firing_for=keep,
        reduce=reduce,
        window=window or 0.0,
        absent_for=absent_for,
        source=source,
    )


def _label_hint(label: str, metric: str, known: tuple[str, ...]) -> str:
    names = ", ".join(known) if known else "none"
    return f'{show_untrusted(label)} is not a label of metric "{metric}" (its labels: {names})'


def _default_summary(metric: str, op: Op | None, absent_for: float | None) -> str:
    if absent_for is not None:
        return f"No {metric} data for {format_duration(absent_for)}"
    return f"{metric} is {{value}} ({op} {{threshold}})"


def _parse_rules(items: object, source: str, errors: list[str]) -> list[tuple[str, Rule | None]]:
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        errors.append(f'{source}: field "rule": must be an array of tables ([[rule]])')
        return []
    if len(items) > MAX_RULES:
        errors.append(f"{source}: too many rules ({len(items)}, at most {MAX_RULES})")
        return []
    parsed: list[tuple[str, Rule | None]] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(items, start=1):
        name, rule = _parse_rule(raw, index, source, errors)
        if not name:
            continue
        if name in first_index:
            errors.append(
                f'{source}: rule "{name}" (#{index}): field "name": '
                f"duplicate name (first used by rule #{first_index[name]})"
            )
            continue
        first_index[name] = index
        parsed.append((name, rule))
    return parsed


def _merge(base: RuleSet, overrides: Sequence[tuple[str, Rule | None]]) -> RuleSet:
    """A same-named override replaces a base rule in place; a disabled one removes it."""
    merged = {r.name: r for r in base.rules}
    for name, rule in overrides:
        if rule is None:
            merged.pop(name, None)
        else:
            merged[name] = rule
    return RuleSet(tuple(merged.values()))


def merge_rules(base: RuleSet, over: RuleSet) -> RuleSet:
    """``over``'s rules replace same-named rules of ``base`` and add the rest (used to put the
    rules pushed by the server on top of the local rules file)."""
    return _merge(base, [(rule.name, rule) for rule in over.rules])


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError([f"{source}: TOML syntax error: {exc}"]) from None


@cache
def default_rules() -> RuleSet:
    """The built-in rules (agent/default_rules.toml), parsed once."""
    text = (Path(__file__).parent / "default_rules.toml").read_text(encoding="utf-8")
    data = _parse_toml(text, DEFAULTS_SOURCE)
    errors: list[str] = []
    parsed = _parse_rules(data.get("rule", []), DEFAULTS_SOURCE, errors)
    if errors:
        raise RulesError(errors)
    return _merge(RuleSet(), parsed)


def load_rules(path: Path | None, *, include_defaults: bool | None = None) -> RuleSet:
    """Load a rules file merged over the built-in rules; ``path`` None gives the defaults only.

    ``include_defaults`` overrides the file's own ``include_defaults`` (default true).
    Raises RulesError listing every problem.
    """
    if path is None:
        return default_rules() if include_defaults is not False else RuleSet()
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RulesError([f"{source}: cannot read rules file: file not found"]) from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise RulesError([f"{source}: cannot read rules file: {reason}"]) from None
    except UnicodeDecodeError:
        raise RulesError([f"{source}: cannot read rules file: not UTF-8 text"]) from None
    data = _parse_toml(text, source)
    errors: list[str] = []
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            errors.append(f"{source}: field {show_untrusted(key)}: unknown field")
    from_file = True
    if "include_defaults" in data:
        if isinstance(data["include_defaults"], bool):
            from_file = data["include_defaults"]
        else:
            errors.append(f'{source}: field "include_defaults": value is not true or false')
    parsed = _parse_rules(data.get("rule", []), source, errors)
    if errors:
        raise RulesError(errors)
    use_defaults = from_file if include_defaults is None else include_defaults
    return _merge(default_rules() if use_defaults else RuleSet(), parsed)


def rules_from_dicts(
    items: Sequence[object], *, source: str, include_defaults: bool = True
) -> RuleSet:
    """Rules pushed by the server (rule tables in the rules-file schema), validated exactly like
    a rules file and merged over the defaults the same way. Raises RulesError."""
    errors: list[str] = []
    parsed = _parse_rules(items, source, errors)
    if errors:
        raise RulesError(errors)
    return _merge(default_rules() if include_defaults else RuleSet(), parsed)
