"""glibc malloc settings: accepted on Linux/glibc, a no-op elsewhere, and allocation still works."""

from __future__ import annotations

import platform
import sys

import torch

from trainer.allocator import keep_freed_memory


def test_keep_freed_memory_is_accepted_by_glibc_and_allocation_still_works() -> None:
    ok = keep_freed_memory()
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert ok is glibc
    for _ in range(3):  # blocks around the mmap threshold are allocated, freed and reused
        a = torch.ones(9 * 1024 * 1024)  # 36 MiB
        b = torch.ones(7 * 1024 * 1024)  # 28 MiB
        assert float(a.sum() + b.sum()) == 16 * 1024 * 1024
        del a, b
