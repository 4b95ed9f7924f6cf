"""The C allocator's settings for serving: keep freed tensor memory instead of handing it back.

glibc's malloc returns large freed blocks to the kernel (``munmap``, or ``madvise`` when it trims a
thread's arena) and gets fresh zeroed pages the next time: every batch of activations then costs
tens of page faults per image. Measured on the MNIST example with batches of 32: ~42 minor faults
per request, a third of the handler thread's time in the kernel. A fixed mmap threshold and a high
trim threshold make the allocator keep and reuse that memory (it stays bounded by the peak a batch
needs). Settings a user gives in ``MALLOC_*`` environment variables win: then nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping

log = logging.getLogger("isvc_runtime.memory")

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap and are reused (glibc's upper bound on 64-bit is 32 MiB).
MMAP_THRESHOLD = 32 * 1024 * 1024
# Free memory at the top of a heap or arena is kept up to this much before it is returned.
TRIM_THRESHOLD = 512 * 1024 * 1024

_USER_SETTINGS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",  # jemalloc, tcmalloc, ...: their own policy
)


def user_configured(env: Mapping[str, str]) -> str | None:
    """The environment variable by which the user chose the allocator's behaviour, if any."""
    return next((name for name in _USER_SETTINGS if env.get(name)), None)


def tune_allocator(env: Mapping[str, str] | None = None) -> bool:
    """Apply the serving thresholds with ``mallopt``; True when applied (glibc, no user setting)."""
    env = os.environ if env is None else env
    chosen = user_configured(env)
    if chosen is not None:
        log.debug("allocator left as %s sets it", chosen)
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
