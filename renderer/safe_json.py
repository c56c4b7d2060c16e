"""The one parser for JSON that comes from outside the process: scene headers and their metadata, camera
files, dataset transforms, the trainer's run records and progress events, the clipboard.

``parse_json`` bounds what a document may ask of us: its size in bytes, its nesting depth (a deep document
makes the standard parser recurse), the digits of an integer (a 400-digit integer converts to float as an
OverflowError), finite numbers only (``1e400``, ``NaN`` and ``Infinity`` are refused) and no duplicate keys
(which the standard parser silently drops). Every refusal is one line naming the document, raised as the
caller's own error type (``SceneFormatError``, ``CameraFormatError``, ``DatasetError``, …).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted."""
MAX_BYTES = 64 * 2**20
"""Largest document accepted by default (the scene header's own limit is the same)."""
MAX_INT_DIGITS = 20
"""Most digits of an integer literal (int64 has 19)."""


class JsonLimitError(ValueError):
    """A JSON document was malformed or past one of the limits (one line naming the document)."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer with {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:24]!r} is out of range")
    return v


def _constant(text: str) -> float:
    raise ValueError(f"{text} is not a number JSON allows")


def depth_of(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d + 1)
            stack.extend((x, d + 1) for x in v if isinstance(x, dict | list))
    return deepest


def parse_json(
    text: str | bytes,
    name: str,
    *,
    error: type[ValueError] = JsonLimitError,
    what: str = "JSON",
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse ``text`` within the limits, or raise ``error("{name}: {what} ...")`` in one line.

    Args:
        name: the file or source named in the message (a path, "clipboard", ...).
        error: the exception type to raise (a ``ValueError`` subclass taking one message).
        what: what the text is, for the message ("camera file", 'metadata "kilonerf"', ...).
    """
    size = len(text)
    if size > max_bytes:
        raise error(f"{name}: {what} is {size} bytes, more than the limit of {max_bytes}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise error(f"{name}: {what} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_pairs, parse_int=_int, parse_float=_float, parse_constant=_constant
        )
    except RecursionError:
        raise error(f"{name}: {what} is nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as e:
        raise error(
            f"{name}: {what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except ValueError as e:
        raise error(f"{name}: {what} is not acceptable JSON ({str(e).splitlines()[0]})") from None
    if depth_of(value) > max_depth:
        raise error(f"{name}: {what} is nested deeper than {max_depth} levels")
    return value
