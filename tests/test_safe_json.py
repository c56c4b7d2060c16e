"""renderer.safe_json: the limits on JSON from outside, each refusal one line naming the document."""

from __future__ import annotations

import pytest

from renderer.safe_json import MAX_DEPTH, JsonLimitError, depth_of, parse_json


class MyError(ValueError):
    pass


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[" * 5000 + "]" * 5000, "nested deeper than"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper than"),
        ('{"a": 1, "a": 2}', "duplicate key 'a'"),
        ('{"focal": ' + "9" * 400 + "}", "integer with 400 digits"),
        ('{"focal": 1e400}', "out of range"),
        ("[NaN]", "NaN is not a number"),
        ("[-Infinity]", "-Infinity is not a number"),
        ("{", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_refusals_are_one_line_in_the_callers_type(text: str | bytes, problem: str) -> None:
    with pytest.raises(MyError) as e:
        parse_json(text, "cam.json", error=MyError, what="camera file")
    msg = str(e.value)
    assert msg.startswith("cam.json: camera file") and problem in msg and "\n" not in msg


def test_accepts_ordinary_documents_and_limits_size() -> None:
    assert parse_json('{"w": 800, "c2w": [[1, 0.5e-3, -2, 3]]}', "x") == {
        "w": 800,
        "c2w": [[1, 0.0005, -2, 3]],
    }
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH, "x") is not None
    with pytest.raises(JsonLimitError, match="x: JSON is 11 bytes, more than the limit of 10"):
        parse_json('"123456789"', "x", max_bytes=10)


def test_depth_of() -> None:
    assert depth_of(3) == 0 and depth_of([]) == 1 and depth_of({"a": [1, {"b": []}]}) == 4
