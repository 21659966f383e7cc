from __future__ import annotations

from agent.collectors.counters import CounterDeltas
from agent.collectors.labels import name_label, unique_labels


def test_first_reading_gives_nothing_then_deltas() -> None:
    d: CounterDeltas[str] = CounterDeltas()
    assert d.update(10.0, {"a": 5, "b": 1}) is None
    assert d.update(12.0, {"a": 9, "b": 1, "c": 4}) == (2.0, {"a": 4, "b": 0})


def test_reset_counter_is_left_out_not_negative() -> None:
    d: CounterDeltas[str] = CounterDeltas()
    d.update(1.0, {"a": 100, "b": 10})
    assert d.update(2.0, {"a": 3, "b": 11}) == (1.0, {"b": 1})
    assert d.update(3.0, {"a": 5, "b": 12}) == (1.0, {"a": 2, "b": 1})


def test_clock_not_advancing_gives_nothing() -> None:
    d: CounterDeltas[str] = CounterDeltas()
    d.update(5.0, {"a": 1})
    assert d.update(5.0, {"a": 2}) is None
    assert d.update(4.0, {"a": 3}) is None
    d.reset()
    assert d.update(6.0, {"a": 4}) is None


def test_name_labels_are_sanitised_truncated_and_unique() -> None:
    assert name_label("my cert (2024).pem") == "my_cert__2024_.pem"
    assert name_label("é") == "_"
    assert name_label("") == "_"
    long = "a" * 40 + ".pem"
    assert name_label(long) == "a" * 32
    assert unique_labels(["x.pem", "x.pem", "x pem", "x_pem"]) == [
        "x.pem",
        "x.pem-2",
        "x_pem",
        "x_pem-2",
    ]
    assert unique_labels([long, long]) == ["a" * 32, "a" * 30 + "-2"]
