"""JSON body parsing: every input is a dict, a 400 or a 422 naming a field — never a crash."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings, strategies as st

from server.api.accounts import Registration
from server.api.bodies import decode_json_object, validate
from server.api.nodes import NodeCreate
from server.errors import BadRequest, Unprocessable

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_decode_or_400(raw: bytes) -> None:
    with contextlib.suppress(BadRequest):
        assert isinstance(decode_json_object(raw), dict)


@given(st.dictionaries(st.text(max_size=30), json_values, max_size=6))
@settings(max_examples=300, deadline=None)
def test_arbitrary_objects_validate_or_422(data: dict[str, object]) -> None:
    raw = json.dumps(data).encode()
    fields: list[str | None] = []
    for model in (NodeCreate, Registration):
        try:
            validate(model, decode_json_object(raw))
        except Unprocessable as exc:
            fields.append(exc.field)
    assert all(field is None or len(field) <= 64 for field in fields)


def test_deep_nesting_is_400_not_recursion() -> None:
    with pytest.raises(BadRequest):
        decode_json_object(b"[" * 200_000 + b"]" * 200_000)


def test_422_message_never_quotes_the_input() -> None:
    secret = "hunter2-hunter2"
    with pytest.raises(Unprocessable) as info:
        validate(NodeCreate, {"name": secret * 10})
    assert secret not in info.value.message
    assert info.value.field == "name"
