"""Keep freed memory in the process heap, so CPU forward passes stop page-faulting.

glibc's malloc serves blocks above 32 MB with ``mmap`` and unmaps them on free. A ViT-S forward
pass at batch 32 allocates and frees several such blocks (attention scores, MLP activations), so
each pass faulted in about 2 GB of fresh zeroed pages: ~500k minor faults per 64 images on these
machines, and 10–15 % of the CPU time. With ``mmap`` off and heap trimming raised, freed blocks are
reused by the next pass: faults fell fourfold and ViT-S fp32 went from 11.0 to 12.8 images/s
(bench/README.md). The cost is that the process keeps its peak heap instead of returning it to
the system, which suits a process that embeds repeatedly. Set ``SOFTMAP_TUNE_MALLOC=0`` to opt out.
"""

from __future__ import annotations

import ctypes
import sys
from functools import lru_cache

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process; False where that is not possible (non-glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_MAX, 0)
        and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
        and mallopt(_M_TOP_PAD, 256 * 2**20)
    )
