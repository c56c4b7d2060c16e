"""Numeric ImGui widgets whose value is always in range: what a user types (Ctrl+click on a slider, a
half-typed ``0`` on the way to ``0.5``, ``nan``, ``1e999``, garbage) is clamped before the viewer sees it.

Each takes the ``imgui`` module (so tests can pass a fake) and returns only the new value. ImGui's own
``SLIDER_FLAGS_ALWAYS_CLAMP`` clamps typed slider values; :func:`clamp` is applied on top, for every widget,
so a non-finite or out-of-range value never leaves this module.
"""

from __future__ import annotations

import math
from typing import Any

RECTS: dict[str, tuple[float, float, float, float]] = {}
"""Where each widget was last drawn, by label: (x0, y0, x1, y1) in window pixels (tests click there)."""


def _note(imgui: Any, label: str) -> None:
    (x0, y0), (x1, y1) = imgui.get_item_rect_min(), imgui.get_item_rect_max()
    RECTS[label] = (float(x0), float(y0), float(x1), float(y1))


def clamp(value: Any, lo: float, hi: float, fallback: float) -> float:
    """``value`` limited to [lo, hi]; ``fallback`` (itself clamped) when it is not a finite number."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = math.nan
    if not math.isfinite(v):
        v = float(fallback) if math.isfinite(float(fallback)) else lo
    return min(hi, max(lo, v))


def slider_float(
    imgui: Any, label: str, value: float, lo: float, hi: float, fmt: str = "%.3f", log: bool = False
) -> float:
    """A float slider over [lo, hi] (logarithmic with ``log``)."""
    flags = imgui.SLIDER_FLAGS_ALWAYS_CLAMP | (imgui.SLIDER_FLAGS_LOGARITHMIC if log else 0)
    _, v = imgui.slider_float(label, clamp(value, lo, hi, lo), lo, hi, fmt, flags=flags)
    _note(imgui, label)
    return clamp(v, lo, hi, value)


def slider_int(imgui: Any, label: str, value: int, lo: int, hi: int) -> int:
    """An integer slider over [lo, hi]."""
    _, v = imgui.slider_int(
        label, int(clamp(value, lo, hi, lo)), lo, hi, flags=imgui.SLIDER_FLAGS_ALWAYS_CLAMP
    )
    _note(imgui, label)
    return int(clamp(v, lo, hi, value))


def input_int(imgui: Any, label: str, value: int, lo: int, hi: int) -> int:
    """An integer field limited to [lo, hi]."""
    _, v = imgui.input_int(label, int(clamp(value, lo, hi, lo)))
    _note(imgui, label)
    return int(clamp(v, lo, hi, value))


def input_int2(imgui: Any, label: str, pair: tuple[int, int], lo: int, hi: int) -> tuple[int, int]:
    """Two integer fields (e.g. W×H), each limited to [lo, hi]."""
    a, b = (int(clamp(x, lo, hi, lo)) for x in pair)
    _, (x, y) = imgui.input_int2(label, a, b)
    _note(imgui, label)
    return int(clamp(x, lo, hi, a)), int(clamp(y, lo, hi, b))


def input_float(imgui: Any, label: str, value: float, lo: float, hi: float, fmt: str = "%.3f") -> float:
    """A float field limited to [lo, hi]."""
    _, v = imgui.input_float(label, clamp(value, lo, hi, lo), format=fmt)
    _note(imgui, label)
    return clamp(v, lo, hi, value)
