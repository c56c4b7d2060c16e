"""Per-stage peak RAM: `reset_peak_ram` starts a new window, `peak_ram_mb` reports the peak within it."""

from __future__ import annotations

import mmap
import sys

import pytest

from trainer.metrics import peak_ram_mb, reset_peak_ram

MIB = 1 << 20


def _resident(mib: int) -> mmap.mmap:
    """``mib`` MiB of fresh anonymous memory with every page written (its own mapping, so whatever malloc
    settings the process has, it adds that much to the resident size and unmapping returns it)."""
    m = mmap.mmap(-1, mib * MIB)
    page = b"\x01" * mmap.PAGESIZE
    for off in range(0, mib * MIB, mmap.PAGESIZE):
        m[off : off + mmap.PAGESIZE] = page
    return m


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the high-water mark reset is Linux's")
def test_peak_window_forgets_an_earlier_peak_and_sees_a_new_one() -> None:
    big = _resident(400)
    high = peak_ram_mb()
    big.close()
    assert reset_peak_ram()
    after = peak_ram_mb()
    assert after < high - 300  # the 400 MiB peak is forgotten
    small = _resident(100)
    assert peak_ram_mb() >= after + 95  # the window sees the new 100 MiB
    small.close()
