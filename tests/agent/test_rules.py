"""Rules file loading, validation, durations and summary templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.metrics import METRICS
from agent.rules import (
    DEFAULTS_SOURCE,
    Rule,
    RulesError,
    RuleSet,
    default_rules,
    load_rules,
    parse_duration,
    rules_from_dicts,
)
from agent.templates import MAX_RENDERED_CHARS, Template

REPO = Path(__file__).resolve().parents[2]

GOOD_RULE = """
[[rule]]
name = "disk_root"
metric = "disk_used_percent"
labels = { mount = "/" }
op = ">"
threshold = 90
clear = 85
for = "2m"
summary = "Disk {labels.mount} is {value:.0f}% full (threshold {threshold})"
"""


def write(tmp_path: Path, text: str, name: str = "rules.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules(write(tmp_path, text), include_defaults=False)
    return info.value.errors


def rule_errors(**fields: Any) -> list[str]:
    with pytest.raises(RulesError) as info:
        rules_from_dicts([fields], source="push", include_defaults=False)
    return info.value.errors


def one(**fields: Any) -> Rule:
    (rule,) = rules_from_dicts([fields], source="push", include_defaults=False).rules
    return rule


BASE: dict[str, Any] = {"name": "r", "metric": "cpu_usage_percent", "op": ">", "threshold": 90}


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0.0),
        (45, 45.0),
        (2.5, 2.5),
        ("90", 90.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1d2h3m4s", 93784.0),
        ("1.5m", 90.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("5x", "invalid duration"),
        ("", "invalid duration"),
        ("m", "invalid duration"),
        ("5m5m", "invalid duration"),
        ("30s1m", "invalid duration"),
        ("5 m", "invalid duration"),
        ("-5m", "negative"),
        (-1, "negative"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (10**400, "out of range"),
        ("400d", "366 days"),
        ("9" * 40, "too long"),
        (True, "not a number"),
        (None, "not a number"),
        ([1], "not a number"),
    ],
)
def test_parse_duration_rejects(text: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


# --- templates ---------------------------------------------------------------------------------


def render(text: str, value: float | None = 93.456, **labels: str) -> str:
    fields = {"value": value, "threshold": 90.0, "clear": 85.0, "rule": "r", "metric": "m"}
    return Template.parse(text).render({**fields, "severity": "warning"}, labels)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("{value}", "93.456"),
        ("{value:.1f}", "93.5"),
        ("{value:.0f}%", "93%"),
        ("{threshold} / {clear}", "90 / 85"),
        ("{rule} {metric} {severity}", "r m warning"),
        ("Disk {labels.mount} full", "Disk / full"),
        ("missing [{labels.nope}]", "missing []"),
        ("{{literal}} }}", "{literal} }"),
        ("[{rule:>3}]", "[  r]"),
    ],
)
def test_template_render(text: str, expected: str) -> None:
    assert render(text, mount="/") == expected


def test_template_missing_value_renders_na() -> None:
    assert render("{value:.1f} left", value=None) == "n/a left"


def test_template_output_truncated() -> None:
    text = Template.parse("{labels.x}").render({}, {"x": "y" * 5000})
    assert len(text) == MAX_RENDERED_CHARS


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{value.__class__}", "unknown placeholder"),
        ("{value[0]}", "unknown placeholder"),
        ("{__import__}", "unknown placeholder"),
        ("{0}", "unknown placeholder"),
        ("{}", "unknown placeholder"),
        ("{labels}", "unknown placeholder"),
        ("{labels.a.b}", "unknown placeholder"),
        ("{value!r}", "unknown placeholder"),
        ("{value:{threshold}}", "unbalanced"),
        ("{value:>1000}", "format spec"),
        ("{value:d}", "format spec"),
        ("{rule:.1f}", "format spec"),
        ("open { brace", "unbalanced"),
        ("close } brace", "unbalanced"),
    ],
)
def test_template_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Template.parse(text)


# --- loading files -----------------------------------------------------------------------------


def test_good_file_merges_over_defaults(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, GOOD_RULE))
    assert rules.names == (*default_rules().names, "disk_root")
    rule = rules.get("disk_root")
    assert rule is not None
    assert rule.labels == (("mount", "/"),)
    assert (rule.op, rule.threshold, rule.clear, rule.for_seconds) == (">", 90.0, 85.0, 120.0)
    assert rule.severity == "warning"
    assert rule.source == str(tmp_path / "rules.toml")


def test_path_none_gives_defaults() -> None:
    assert load_rules(None) == default_rules()
    assert load_rules(None, include_defaults=False) == RuleSet()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_rules(write(tmp_path, "")) == default_rules()


def test_include_defaults_false_in_file(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, "include_defaults = false\n" + GOOD_RULE))
    assert rules.names == ("disk_root",)


def test_include_defaults_argument_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "include_defaults = false\n" + GOOD_RULE)
    assert "memory_low" in load_rules(path, include_defaults=True).names
    assert load_rules(write(tmp_path, GOOD_RULE), include_defaults=False).names == ("disk_root",)


def test_override_default_keeps_position(tmp_path: Path) -> None:
    text = """
[[rule]]
name = "memory_low"
metric = "memory_available_percent"
op = "<"
threshold = 2
severity = "info"
"""
    rules = load_rules(write(tmp_path, text))
    assert rules.names == default_rules().names
    rule = rules.get("memory_low")
    assert rule is not None
    assert (rule.threshold, rule.severity, rule.clear) == (2.0, "info", None)


def test_disable_default(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, '[[rule]]\nname = "oom_kill"\ndisabled = true\n'))
    assert "oom_kill" not in rules.names
    assert len(rules) == len(default_rules()) - 1


def test_disabled_rule_still_checked_for_unknown_fields(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, '[[rule]]\nname = "x"\ndisabled = true\nthreshhold = 1\n')
    assert errors == [
        f'{tmp_path / "rules.toml"}: rule "x" (#1): field "threshhold": unknown field'
    ]


def test_disabled_user_rule_is_dropped(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, GOOD_RULE + "disabled = true\n"), include_defaults=False)
    assert rules == RuleSet()


def test_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path / "nope.toml")
    assert info.value.errors == [
        f"{tmp_path / 'nope.toml'}: cannot read rules file: file not found"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(RulesError, match="not UTF-8"):
        load_rules(path)


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, '[[rule]]\nname = "x"\nop = >\n')
    assert len(errors) == 1
    assert errors[0].startswith(f"{tmp_path / 'rules.toml'}: TOML syntax error")
    assert "line 3" in errors[0]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "includ_defaults = true\n")
    assert errors == [f'{tmp_path / "rules.toml"}: field "includ_defaults": unknown field']


def test_include_defaults_not_bool(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, 'include_defaults = "yes"\n')
    assert errors == [
        f'{tmp_path / "rules.toml"}: field "include_defaults": value is not true or false'
    ]


@pytest.mark.parametrize("text", ["rule = 5\n", 'rule = "x"\n', "[rule]\nname = 'x'\n"])
def test_rule_not_an_array(tmp_path: Path, text: str) -> None:
    errors = load_errors(tmp_path, text)
    assert errors == [
        f'{tmp_path / "rules.toml"}: field "rule": must be an array of tables ([[rule]])'
    ]


def test_non_table_rule(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "rule = [1, 'x']\n")
    source = tmp_path / "rules.toml"
    assert errors == [
        f"{source}: rule #1: not a table (got int)",
        f"{source}: rule #2: not a table (got str)",
    ]


def test_all_errors_collected_with_file_rule_and_field(tmp_path: Path) -> None:
    text = """
[[rule]]
name = "ok"
metric = "disk_used_percent"
op = ">"
threshold = 90

[[rule]]
name = "bad op"
metrk = "disk_used_percent"

[[rule]]
name = "disk_full"
metric = "disk_used_percent"
op = ">="
threshold = "ninety"
for = "5x"
"""
    errors = load_errors(tmp_path, text)
    s = tmp_path / "rules.toml"
    assert errors == [
        f'{s}: rule #2: field "metrk": unknown field',
        f'{s}: rule #2: field "name": "bad op" is not 1-64 characters of A-Z a-z 0-9 _ . -',
        f'{s}: rule #2: field "metric": required',
        f'{s}: rule #2: field "op": required (or absent_for for an absent-data rule)',
        f'{s}: rule #2: field "threshold": required',
        f'{s}: rule "disk_full" (#3): field "threshold": value is not a number',
        f'{s}: rule "disk_full" (#3): field "for": invalid duration "5x" '
        '(use seconds, or e.g. "30s", "5m", "2h", "1d", "1m30s")',
    ]
    assert str(RulesError(errors)) == "\n".join(errors)


# --- validation of single rules (one error path each) --------------------------------------------

P = 'push: rule "r" (#1)'
INT_KEY: dict[Any, Any] = {**BASE, 5: "int key"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"metrk": "x"}, f'{P}: field "metrk": unknown field'),
        (
            {"metric": "disk_used_percnt"},
            f'{P}: field "metric": unknown metric "disk_used_percnt" '
            '(did you mean "disk_used_percent"?)',
        ),
        ({"metric": 5}, f'{P}: field "metric": value is not a string (got int)'),
        ({"op": "=>"}, f'{P}: field "op": "=>" is not one of >, >=, <, <=, ==, !='),
        ({"threshold": True}, f'{P}: field "threshold": value is not a number'),
        ({"threshold": float("nan")}, f'{P}: field "threshold": value must be a finite number'),
        ({"threshold": float("inf")}, f'{P}: field "threshold": value must be a finite number'),
        ({"threshold": 10**400}, f'{P}: field "threshold": value is out of range'),
        ({"threshold": 1e300}, f'{P}: field "threshold": value is out of range'),
        (
            {"for": "5x"},
            f'{P}: field "for": invalid duration "5x" '
            '(use seconds, or e.g. "30s", "5m", "2h", "1d", "1m30s")',
        ),
        ({"for": -5}, f'{P}: field "for": duration must not be negative'),
        (
            {"keep_firing_for": "-1m"},
            f'{P}: field "keep_firing_for": duration must not be negative',
        ),
        ({"clear": 95}, f'{P}: field "clear": must be <= threshold (90) for a ">" rule'),
        ({"op": "<", "clear": 80}, f'{P}: field "clear": must be >= threshold (90) for a "<" rule'),
        (
            {"op": "<=", "clear": 89.5},
            f'{P}: field "clear": must be >= threshold (90) for a "<=" rule',
        ),
        (
            {"op": "==", "clear": 90},
            f'{P}: field "clear": not allowed with op "==" (clear needs an ordering op)',
        ),
        ({"reduce": "median"}, f'{P}: field "reduce": "median" is not one of last, avg, min, max'),
        ({"reduce": "avg"}, f'{P}: field "window": required when reduce is "avg"'),
        ({"window": "1m"}, f'{P}: field "window": only allowed with reduce = avg, min or max'),
        ({"reduce": "max", "window": 0}, f'{P}: field "window": must be greater than 0'),
        (
            {"severity": "fatal"},
            f'{P}: field "severity": "fatal" is not one of info, warning, critical',
        ),
        ({"disabled": "no"}, f'{P}: field "disabled": value is not true or false'),
        ({"labels": "mount=/"}, f'{P}: field "labels": value is not a table of label = "value"'),
        (
            {"labels": {"mount": "/"}},
            f'{P}: field "labels": "mount" is not a label of metric '
            '"cpu_usage_percent" (its labels: none)',
        ),
        (
            {"labels": {"mount": {"x": 1}}},
            f'{P}: field "labels": label "mount": label names and values must be strings',
        ),
        (
            {"labels": {"mount": ""}},
            f'{P}: field "labels": label "mount": value must be 1-128 chars',
        ),
        ({"labels": {str(i): "x" for i in range(9)}}, f'{P}: field "labels": more than 8 labels'),
        (
            {"summary": "{value.__class__}"},
            f'{P}: field "summary": unknown placeholder '
            '"{value.__class__}" (known: {value}, {threshold}, {clear}, {rule}, {metric}, '
            "{severity}, {labels.<name>})",
        ),
        ({"summary": "x" * 301}, f'{P}: field "summary": summary is longer than 300 characters'),
        (
            {"summary": "{labels.mount}"},
            f'{P}: field "summary": "mount" is not a label of metric '
            '"cpu_usage_percent" (its labels: none)',
        ),
        ({"summary": ["x"]}, f'{P}: field "summary": value is not a string (got list)'),
    ],
)
def test_rule_validation_errors(fields: dict[str, Any], expected: str) -> None:
    assert rule_errors(**{**BASE, **fields}) == [expected]


@pytest.mark.parametrize(
    "key", ["op", "threshold", "clear", "reduce", "window", "for", "keep_firing_for"]
)
def test_absent_rule_rejects_threshold_fields(key: str) -> None:
    value: object = {"op": ">", "reduce": "avg"}.get(key, 1)
    errors = rule_errors(name="r", metric="conntrack_used_percent", absent_for="5m", **{key: value})
    assert f'{P}: field "{key}": not allowed in an absent rule (absent_for is set)' in errors


def test_absent_rule_checks() -> None:
    assert rule_errors(name="r", metric="load1", absent_for=0) == [
        f'{P}: field "absent_for": must be greater than 0'
    ]
    assert rule_errors(name="r", metric="load1", absent_for="5m", summary="{value}") == [
        f'{P}: field "summary": placeholder {{value}} is not available in an absent rule'
    ]


def test_absent_rule_loads() -> None:
    rule = one(name="r", metric="net_up", labels={"interface": "wg0"}, absent_for="5m")
    assert rule.is_absent
    assert (rule.absent_for, rule.op, rule.threshold) == (300.0, None, None)
    assert rule.summary.source == "No net_up data for 5m"


def test_defaults_applied() -> None:
    rule = one(**BASE)
    assert (rule.severity, rule.for_seconds, rule.keep_firing_for, rule.reduce) == (
        "warning",
        0.0,
        0.0,
        "last",
    )
    assert rule.clear_level == 90.0
    assert rule.summary.source == "cpu_usage_percent is {value} (> {threshold})"


def test_clear_equal_to_threshold_allowed() -> None:
    assert one(**BASE, clear=90).clear == 90.0


def test_duplicate_names() -> None:
    with pytest.raises(RulesError) as info:
        rules_from_dicts([BASE, BASE], source="push")
    assert info.value.errors == [
        'push: rule "r" (#2): field "name": duplicate name (first used by rule #1)'
    ]


def test_missing_name() -> None:
    errors = rule_errors(metric="load1", op=">", threshold=1)
    assert errors == ['push: rule #1: field "name": required']


@pytest.mark.parametrize("name", [5, None, ["a"], "", "x" * 65, "a b", "ü", "a/b"])
def test_bad_names(name: object) -> None:
    errors = rule_errors(**{**BASE, "name": name})
    assert len(errors) == 1
    assert errors[0].startswith('push: rule #1: field "name": ')


# --- hostile pushed rules ------------------------------------------------------------------------


def test_pushed_rules_merge_over_defaults() -> None:
    rules = rules_from_dicts(
        [{**BASE, "name": "memory_low"}, {"name": "oom_kill", "disabled": True}], source="push"
    )
    assert "oom_kill" not in rules.names
    memory_low = rules.get("memory_low")
    assert memory_low is not None
    assert memory_low.metric == "cpu_usage_percent"
    assert memory_low.source == "push"


@pytest.mark.parametrize(
    "items",
    [
        "not a list",
        b"bytes",
        {"name": "r"},
        5,
        None,
    ],
)
def test_pushed_rules_not_a_list(items: Any) -> None:
    with pytest.raises(RulesError, match="must be an array of tables"):
        rules_from_dicts(items, source="push")


@pytest.mark.parametrize(
    "item",
    [
        None,
        "rule",
        [BASE],
        {**BASE, "name": {"nested": ["junk"]}},
        {**BASE, "threshold": [1, 2]},
        {**BASE, "threshold": {"$gt": 1}},
        {**BASE, "threshold": "1e999"},
        {**BASE, "for": 10**100},
        {**BASE, "for": "9" * 10_000},
        {**BASE, "labels": [["mount", "/"]]},
        INT_KEY,
        {**BASE, "x" * 10_000: 1},
        {**BASE, "summary": "{" * 1000},
        {**BASE, "metric": "m" * 100_000},
    ],
)
def test_pushed_hostile_input(item: Any) -> None:
    with pytest.raises(RulesError) as info:
        rules_from_dicts([item], source="push")
    assert info.value.errors
    assert all(e.startswith("push: rule #1") or e.startswith(P) for e in info.value.errors)
    assert all(len(e) < 400 for e in info.value.errors)


def test_too_many_rules() -> None:
    items = [{**BASE, "name": f"r{i}"} for i in range(501)]
    with pytest.raises(RulesError, match="too many rules"):
        rules_from_dicts(items, source="push")


# --- shipped files -------------------------------------------------------------------------------


def test_default_rules_load_clean() -> None:
    rules = default_rules()
    assert len(rules) >= 15
    assert all(r.source == DEFAULTS_SOURCE for r in rules)
    assert all(r.metric in METRICS for r in rules)
    assert len(set(rules.names)) == len(rules)
    by_name = {r.name: r for r in rules}
    assert by_name["vpn_process_down"].severity == "critical"
    assert by_name["ip_forwarding_disabled"].labels == (("family", "ipv4"),)


def test_example_rules_file_loads_clean() -> None:
    path = REPO / "deploy" / "config" / "rules.example.toml"
    rules = load_rules(path)
    assert any(r.is_absent for r in rules)
    assert any(r.reduce != "last" for r in rules)
    assert any(r.source == str(path) for r in rules)
