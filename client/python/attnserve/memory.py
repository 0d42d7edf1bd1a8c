"""Keeping freed memory for reuse (glibc), so that each call's buffers are warm.

Every attnserve call makes large short-lived buffers: the request bytes, gRPC's copy of them,
the response bytes. glibc serves allocations above its mmap threshold (at most 32 MiB) with
fresh mappings and unmaps them when freed, so each call faults in new pages, which on some
virtual machines fills memory at well under 1 GB/s where a warm copy runs at 10+ GB/s.
`tune_malloc()` makes glibc serve large allocations from the heap and keep up to 2 GiB of freed
heap instead of returning it, so from the second call on the buffers reuse mapped memory. The
cost: the process's resident size stays at its peak. It changes the whole process's allocator;
call it once at start-up (or set MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 in the
environment before Python starts).
"""

import ctypes

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_malloc(trim_threshold: int = (1 << 31) - 1) -> bool:
    """Serve large allocations from the heap and keep freed heap memory up to
    `trim_threshold` bytes. Returns False where mallopt is not available (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                          int(trim_threshold)))
