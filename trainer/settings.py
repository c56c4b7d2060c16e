"""Settings of a training run: each field's valid values are declared beside the field, as data, and one
function validates a whole configuration against them.

A configuration dataclass (`trainer.presets.Preset` and the stage configs it groups) declares a field as

    steps: int = setting(1500, ge=1, le=MAX_STEPS)
    \"\"\"Optimiser steps.\"\"\"

The field's kind (``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]``, ``tuple[float, ...]``, each
optionally ``| None``) comes from its annotation; the `Rule` holds its range (``ge``/``gt``/``le``/``lt``,
applied to every item of a tuple), its allowed values (``choices``), a tuple's length, and which pipeline
stage first depends on it (``stage``; ``anytime`` for fields that never change a stage's result, such as
checkpoint intervals). Relations between fields (one fraction per grid step, trained octaves <= octaves)
are a dataclass's ``relations()`` method. `validate` (through `problems`) checks every field, then the
relations, and refuses in one line naming the dotted key, the allowed values and the value given.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

MAX_STEPS = 10**8
"""Most optimiser steps of any stage."""
MAX_RAYS = 2**24
"""Most rays (or points) in one batch."""
MAX_SEED = 2**31 - 1
"""Largest random seed."""
MAX_SECONDS = 1e12
"""Longest interval in seconds (checkpoints, scene rewrites)."""
MAX_WEIGHT = 1e3
"""Largest loss weight."""
MAX_LR = 10.0
"""Largest learning rate."""

RULE_KEY = "kilonerf_rule"


class PresetError(ValueError):
    """An unknown preset or setting, or a value outside a setting's allowed values (one line)."""


@dataclass(frozen=True)
class Rule:
    """The valid values of one setting (bounds apply to each item of a tuple)."""

    ge: float | None = None
    """Lower bound, inclusive."""
    gt: float | None = None
    """Lower bound, exclusive."""
    le: float | None = None
    """Upper bound, inclusive."""
    lt: float | None = None
    """Upper bound, exclusive."""
    choices: tuple[Any, ...] | None = None
    """The only values allowed."""
    length: tuple[int, int] | None = None
    """A tuple's fewest and most items."""
    stage: str | None = None
    """The first pipeline stage whose result depends on it (a group's fields inherit the group's)."""
    anytime: bool = False
    """True: changing it never changes a stage's result (intervals, chunk sizes, reporting)."""
    settable: bool = True
    """False: not a setting ``--set`` may change."""


def setting(default: Any = dataclasses.MISSING, *, factory: Any = None, **rule: Any) -> Any:
    """A dataclass field with its `Rule` (``factory``: a default_factory instead of ``default``)."""
    meta = {RULE_KEY: Rule(**rule)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def group(cls: type, *, stage: str | None) -> Any:
    """A field holding a nested configuration dataclass whose settings belong to ``stage``."""
    return field(default_factory=cls, metadata={RULE_KEY: Rule(stage=stage)})


def rule_of(f: dataclasses.Field[Any]) -> Rule:
    """The field's rule (a field declared without one has none: a programming error)."""
    rule = f.metadata.get(RULE_KEY)
    if rule is None:
        raise TypeError(f"setting {f.name!r} has no rule: declare it with trainer.settings.setting()")
    return rule  # type: ignore[no-any-return]


def is_group(f: dataclasses.Field[Any]) -> bool:
    """Whether the field holds a nested configuration (declared with `group`)."""
    return isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory)


def kind_of(f: dataclasses.Field[Any]) -> tuple[str, bool]:
    """``(kind, optional)`` from the field's annotation: ``"int | None"`` -> ``("int", True)``."""
    parts = [p.strip() for p in str(f.type).split(" | ")]
    optional = "None" in parts
    base = [p for p in parts if p != "None"]
    return (base[0] if base else "None"), optional


def show(value: Any) -> str:
    """A value as the user would type it (JSON where possible)."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def _bounds(rule: Rule) -> str:
    lo = f"[{_num(rule.ge)}" if rule.ge is not None else f"({_num(rule.gt)}" if rule.gt is not None else ""
    hi = f"{_num(rule.le)}]" if rule.le is not None else f"{_num(rule.lt)})" if rule.lt is not None else ""
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return f">= {_num(rule.ge)}" if rule.ge is not None else f"> {_num(rule.gt)}"  # type: ignore[arg-type]
    if hi:
        return f"<= {_num(rule.le)}" if rule.le is not None else f"< {_num(rule.lt)}"  # type: ignore[arg-type]
    return ""


def allowed(kind: str, optional: bool, rule: Rule) -> str:
    """What the setting accepts, in words: ``"an integer in [1, 100000000]"``."""
    if rule.choices is not None:
        text = "one of " + ", ".join(show(c) for c in rule.choices)
    elif kind == "bool":
        text = "true or false"
    elif kind in ("int", "float"):
        noun = "an integer" if kind == "int" else "a finite number"
        b = _bounds(rule)
        text = f"{noun} {b}" if b else noun
    elif kind.startswith("tuple["):
        item = "integers" if "int" in kind else "numbers"
        b = _bounds(rule)
        lo, hi = rule.length if rule.length is not None else (0, 1 << 30)
        count = f"{lo}" if lo == hi else f"{lo} to {hi}"
        text = f"a list of {count} {item}" + (f", each {b}" if b else "")
    elif kind == "str":
        text = "a string"
    elif kind.startswith("dict["):
        text = "an object"
    else:
        text = kind
    return text + (" or null" if optional else "")


def _in_bounds(x: float, rule: Rule) -> bool:
    return not (
        (rule.ge is not None and x < rule.ge)
        or (rule.gt is not None and x <= rule.gt)
        or (rule.le is not None and x > rule.le)
        or (rule.lt is not None and x >= rule.lt)
    )


def _scalar_ok(kind: str, v: Any, rule: Rule) -> bool:
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool) and _in_bounds(v, rule)
    if kind == "float":
        return (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and _in_bounds(float(v), rule)
        )
    if kind == "str":
        return isinstance(v, str)
    return True


def value_ok(kind: str, optional: bool, rule: Rule, v: Any) -> bool:
    """Whether ``v`` is an allowed value of a setting of that kind and rule."""
    if v is None:
        return optional
    if rule.choices is not None and not (v in rule.choices and type(v) is type(rule.choices[0])):
        return False
    if kind.startswith("tuple["):
        if not isinstance(v, tuple | list):
            return False
        lo, hi = rule.length if rule.length is not None else (0, 1 << 30)
        item = "int" if "int" in kind else "float"
        return lo <= len(v) <= hi and all(_scalar_ok(item, x, rule) for x in v)
    if kind.startswith("dict["):
        return isinstance(v, dict)
    return _scalar_ok(kind, v, rule)


@dataclass(frozen=True)
class Problem:
    """One invalid setting: the dotted key, the one-line message, and the stage that depends on it."""

    key: str
    message: str
    stage: str | None


def problems(obj: Any, prefix: str = "", stage: str | None = None) -> list[Problem]:
    """Every invalid setting of configuration ``obj`` (fields first, then, when they pass, relations)."""
    out: list[Problem] = []
    for f in dataclasses.fields(obj):
        rule = rule_of(f)
        key = prefix + f.name
        value = getattr(obj, f.name)
        own_stage = None if rule.anytime else (rule.stage or stage)
        if is_group(f):
            if not dataclasses.is_dataclass(value):
                out.append(Problem(key, f"{key} must be a group of settings, got {show(value)}", own_stage))
            else:
                out += problems(value, key + ".", own_stage)
            continue
        kind, optional = kind_of(f)
        if not value_ok(kind, optional, rule, value):
            out.append(
                Problem(key, f"{key} must be {allowed(kind, optional, rule)}, got {show(value)}", own_stage)
            )
    if not out and hasattr(obj, "relations"):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        for name, text in obj.relations():
            rule = rule_of(fields[name])
            st = None if rule.anytime else (rule.stage or stage)
            out.append(Problem(prefix + name, f"{prefix}{name} {text}", st))
    return out


def validate(obj: Any, where: str) -> None:
    """Raise `PresetError` ``"{where}: {the first problem}"`` when a setting of ``obj`` is invalid."""
    found = problems(obj)
    if found:
        raise PresetError(f"{where}: {found[0].message}")


def stage_of(obj: Any, key: str) -> str | None:
    """The stage that first depends on the dotted ``key`` of ``obj`` (None: no stage's result)."""
    stage: str | None = None
    node = obj
    for part in key.split("."):
        f = {f.name: f for f in dataclasses.fields(node)}[part]
        rule = rule_of(f)
        if rule.anytime:
            return None
        stage = rule.stage or stage
        node = getattr(node, part)
    return stage


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configurations of the same class."""
    out: list[str] = []
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            out += changed_keys(a, b, prefix + f.name + ".")
        elif show(a) != show(b):
            out.append(prefix + f.name)
    return out
