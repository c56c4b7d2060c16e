"""Per-stage peak RAM: `reset_peak_ram` starts a new window, `peak_ram_mb` reports the peak within it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from trainer.metrics import peak_ram_mb, reset_peak_ram


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the high-water mark reset is Linux's")
def test_peak_window_forgets_an_earlier_peak_and_sees_a_new_one() -> None:
    big = np.ones(400 << 20, dtype=np.uint8)  # 400 MiB touched, then returned to the OS (own mmap)
    high = peak_ram_mb()
    del big
    assert reset_peak_ram()
    after = peak_ram_mb()
    assert after < high - 300  # the 400 MiB peak is forgotten
    small = np.ones(100 << 20, dtype=np.uint8)
    assert peak_ram_mb() >= after + 90  # the window sees the new 100 MiB
    del small
