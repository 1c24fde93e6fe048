"""Keep freed memory in the process on glibc, so that CPU training does not page-fault every step.

glibc's malloc serves a large block (above `M_MMAP_THRESHOLD`, dynamically 128 KiB up to 32 MiB)
with a fresh `mmap` and returns it to the kernel on `free`, and it trims the top of the heap back
to the kernel once more than `M_TRIM_THRESHOLD` is free. A training step allocates and frees the
same activation-sized tensors (a few MiB each) every step, so every step touches fresh pages and
pays a page fault per 4 KiB: measured here, 3,300 to 8,800 faults a step for the 100k presets and
up to a third of an LSTM's step (BENCHMARKS.md, "Training throughput"). PyTorch's CPU allocator
is malloc, and its performance guide recommends an allocator that keeps memory (jemalloc,
tcmalloc) for the same reason; glibc's own switches do it without a preloaded library.

`retain_freed_memory()` sets them once per process (`zoo` calls it at start; the benchmarks too):
blocks up to 32 MiB (glibc's maximum) come from the heap, and freed heap memory is kept up to
1 GiB. It does nothing on other C libraries, or where the user chose for themselves
(`MALLOC_*` environment variables, an allocator in `LD_PRELOAD`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD = -1  # mallopt parameters, <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
"""Blocks below this come from the heap (glibc's upper limit for `M_MMAP_THRESHOLD`)."""
TRIM_THRESHOLD = 1 << 30
"""Free memory kept at the top of the heap before glibc gives it back to the kernel."""

_done: bool | None = None


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process; True if they are set (now or before)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    user_chose = any(name.startswith("MALLOC_") for name in os.environ) or any(
        name in os.environ.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")
    )
    if user_chose or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        _done = False
    return _done
