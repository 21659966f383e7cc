"""Metrics frames read by their shape: the ingest fast path for what agents send every interval.

An agent sends the same series, in the same order, every interval; only the values change. A
:class:`FrameShape` is that list of series (metric names and labels), learnt from one frame
that :func:`agent.protocol.parse_agent_frame` accepted. :meth:`FrameShape.read` decodes a later
frame with msgspec (C: JSON and structure in one pass, ~3x faster than validating it with
pydantic) into bare structures: ``v`` 1, ``type`` "metrics", ``seq`` an int ≥ 0, ``ts`` a
finite float, samples of a str ``m``, an optional dict of str ``l`` and a float or str ``v``,
nothing else. It takes the frame only when, moreover:

* its metric names and labels equal the shape's, in order (one list comparison each: no name
  needs checking again, the learnt frame's were validated);
* every value is a finite float or a coarsened ``"<k"`` string (msgspec refuses NaN, infinity
  and numbers beyond a float's range; it reads integers as floats, as the models do);
* it is no longer than ``MAX_AGENT_FRAME_BYTES``.

Such a frame is a message the models accept, and what :meth:`read` returns is what they give:
msgspec reads JSON as ``json.loads`` does for everything it accepts (last duplicate key wins,
floats correctly rounded, the same escapes); anything else it refuses — lone surrogates,
trailing bytes, out-of-range numbers, a bool or a string where a number belongs — and the
caller takes the full path, which decides and explains. The one difference is the order of a
sample's labels: equal as dicts, kept in the learnt frame's order. ``tests/server/
test_shapes.py`` holds the proof by hypothesis: for any text, :meth:`read` gives None or the
models' contents.

Why (``bench/ingest``, 5,000 agents on this 2-core machine): the validated parse cost ~100 µs
of a 200-µs frame and storing it ~40 µs more (a dict per sample, then a comparison per sample
against the node's layout). A shaped frame's values reach :meth:`server.live.LiveState.metrics`
as one list, stored with one slice assignment.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal, NamedTuple

import msgspec

from agent.protocol import MAX_AGENT_FRAME_BYTES, MetricsFrame, SampleData

_COARSENED: Final = re.compile(r"<[0-9]{1,3}")
_ONLY_FLOATS: Final = frozenset({float})
_FLOATS_AND_TEXT: Final = frozenset({float, str})


class _Sample(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    m: str
    v: float | str
    l: dict[str, str] | msgspec.UnsetType = msgspec.UNSET  # noqa: E741  (null is refused)


class _Frame(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    v: Literal[1]
    type: Literal["metrics"]
    seq: Annotated[int, msgspec.Meta(ge=0)]
    ts: float
    samples: list[_Sample]


_decode: Final = msgspec.json.Decoder(_Frame).decode


class ShapedFrame(NamedTuple):
    """A metrics frame read by its shape: ``values[i]`` is the value of series ``i``."""

    seq: int
    ts: float
    values: list[float | str]
    shape: FrameShape

    @property
    def samples(self) -> list[SampleData]:
        """The frame as :func:`agent.protocol.parse_agent_frame` gives it (built on demand)."""
        samples: list[SampleData] = []
        for metric, labels, value in zip(
            self.shape.metrics, self.shape.labels, self.values, strict=True
        ):
            sample: SampleData = {"m": metric, "v": value}
            if labels is not None:
                sample["l"] = labels
            samples.append(sample)
        return samples

    def as_frame(self) -> MetricsFrame:
        return MetricsFrame(self.seq, self.ts, self.samples)


class FrameShape:
    """The series of one kind of metrics frame, in order (see the module). Never mutate one:
    its lists are compared with every frame it reads."""

    __slots__ = ("_as_read", "labels", "metrics")

    def __init__(self, metrics: list[str], labels: list[dict[str, str] | None]) -> None:
        self.metrics = metrics
        self.labels = labels
        """Per sample, its labels as sent, or None when it had no ``l``."""
        self._as_read: list[dict[str, str] | msgspec.UnsetType] = [
            msgspec.UNSET if item is None else item for item in labels
        ]

    @classmethod
    def learn(cls, frame: MetricsFrame) -> FrameShape | None:
        """The shape of a frame :func:`agent.protocol.parse_agent_frame` accepted (None for
        one without samples: nothing to gain)."""
        if not frame.samples:
            return None
        return cls([s["m"] for s in frame.samples], [s.get("l") for s in frame.samples])

    def read(self, raw: str | bytes) -> ShapedFrame | None:
        """``raw`` as a :class:`ShapedFrame` if it is a valid frame of this shape, else None:
        None means "take the full path", never "invalid"."""
        if len(raw) > MAX_AGENT_FRAME_BYTES:
            return None
        try:
            frame = _decode(raw)
        except msgspec.MsgspecError:
            return None
        samples = frame.samples
        if [s.m for s in samples] != self.metrics or [s.l for s in samples] != self._as_read:
            return None
        values: list[float | str] = [s.v for s in samples]
        kinds = set(map(type, values))
        if kinds != _ONLY_FLOATS:
            if not kinds <= _FLOATS_AND_TEXT:
                return None
            for value in values:
                if type(value) is str and _COARSENED.fullmatch(value) is None:
                    return None
        return ShapedFrame(frame.seq, frame.ts, values, self)
