"""The fuzz harness (benchmarks/fuzz_scene.py) on a fixed-seed sample: every mutated scene is refused with
one line or accepted and rendered without a NaN pixel, within the time and memory limits; no traceback.
The full run (10,000+ cases) is `python benchmarks/fuzz_scene.py --cases 10000`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import fuzz_scene  # noqa: E402


@pytest.mark.parametrize("kind, cases", [("scene", 500)])
def test_fixed_seed_sample_has_no_failures(kind: str, cases: int) -> None:
    summary = fuzz_scene.run({kind: cases}, seed=1)[kind]
    assert summary.cases == cases
    assert summary.failures == [], [f"{f.kind}: {f.mutation}: {f.detail}" for f in summary.failures[:5]]
    # the sample exercises both ends: refusals and accepted files that render
    assert summary.outcomes["refused"] > cases // 4 and summary.outcomes["accepted"] > cases // 20


def test_a_failure_is_reported_as_such() -> None:
    def boom() -> str:
        raise KeyError("x")

    o = fuzz_scene.run_limited("probe", 10, boom, (ValueError,))
    assert o.failed and o.kind == "traceback" and "KeyError" in o.detail
    o = fuzz_scene.run_limited("probe", 10, lambda: (_ for _ in ()).throw(ValueError("a\nb")), (ValueError,))
    assert o.kind == "multi-line"
