"""glibc malloc settings for training: keep large freed blocks in the heap instead of unmapping them.

Every training step allocates and frees tensors of up to tens of MB (a step's samples). With glibc's
defaults, blocks above the mmap threshold (128 KiB at first, raised only as such blocks are freed) get
their own ``mmap``, returned by ``munmap`` on free, and the top of the heap is trimmed back to the OS, so
the kernel zero-fills the same memory again at the next step. Fixing the mmap threshold at its maximum
(32 MiB on 64-bit glibc) and (almost) never trimming the heap keeps those pages mapped across steps.
Measured on lego's cpu preset (800 teacher / 300 distillation / 60 fine-tuning steps, same run
otherwise, 2-core CPU): teacher 0.46 -> 0.42 s/step (-8%), distillation -4%, fine-tuning -7%, identical
results; peak RSS 1.47 -> 1.77 GB.

Process-wide: `trainer.__main__` applies it, not `trainer.cli.main` (which tests call in-process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
"""`mallopt` parameter: free memory at the top of the heap above this many bytes is returned to the OS."""
M_TOP_PAD = -2
"""`mallopt` parameter: extra bytes requested from the OS each time the heap grows."""
M_MMAP_THRESHOLD = -3
"""`mallopt` parameter: allocations of at least this many bytes get their own mmap."""

MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
"""glibc's upper limit for ``M_MMAP_THRESHOLD`` on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``)."""


def keep_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD_MAX, trim_threshold: int = 2**31 - 1, top_pad: int = 256 << 20
) -> bool:
    """Apply the settings above to this process's glibc malloc; True when ``mallopt`` reported success
    for all three (glibc 2.36 reports success even for an mmap threshold above its limit, which it then
    ignores: keep ``mmap_threshold`` at most `MMAP_THRESHOLD_MAX`).

    A no-op returning False off Linux, and False where ``mallopt`` is missing or refuses (musl's stub).
    Call it before the first large allocation; it changes only future allocations.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok = mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1 and ok
    ok = mallopt(M_TOP_PAD, int(top_pad)) == 1 and ok
    return ok
