"""Process-wide glibc malloc settings for CPU inference.

By default glibc serves every allocation above its mmap threshold (128 KiB, adapting up to
32 MiB) with its own mmap and returns it to the kernel on free, so each frame's feature maps are
mapped afresh and page-faulted in on first touch. Keeping them in the heap instead lets the next
frame reuse the same pages, which shortens backbone and neck on a CPU (docs/benchmarks.md). The
cost is that the process keeps its peak frame memory mapped between frames (and more where other
threads' allocations, such as a node's incoming clouds, interleave with the frame's: the
detector node therefore sets it only when asked).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
HEAP_LIMIT = 1 << 30  # allocations up to 1 GiB come from the heap, and freed memory stays there


def keep_freed_memory() -> bool:
    """Tell glibc to serve allocations up to 1 GiB from its heap and not to trim it; returns
    whether it took both settings (False on other C libraries, which are left as they are)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt in the C library %s: malloc settings unchanged", name)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return (bool(mallopt(M_MMAP_THRESHOLD, HEAP_LIMIT))
            and bool(mallopt(M_TRIM_THRESHOLD, HEAP_LIMIT)))
