"""The C allocator's settings for serving: keep freed tensor memory instead of handing it back.

glibc's malloc returns large freed blocks to the kernel (``munmap``, or ``madvise`` when it trims a
thread's arena) and gets fresh zeroed pages the next time: every batch of activations then costs
tens of page faults per image. Measured on the MNIST example with batches of 32: ~42 minor faults
per request, a third of the handler thread's time in the kernel. A fixed mmap threshold and a high
trim threshold make the allocator keep and reuse that memory (it stays bounded by the peak a batch
needs). One arena serves every thread: glibc gives each thread that allocates an arena of its own, and
each arena keeps what its thread's peak needed, so a model's two handler streams (batching/streams.py) held
two peaks where one call on both cores held one. Measured paired with ResNet-18 by default (the streams'
model), one arena against one per thread: PSS idle 666 against 686 MiB, req/s 1.01x at c1, 0.99x at c32;
MNIST v1 c32 1.02x tuned and by default (bench/results.md). Settings a user gives in ``MALLOC_*``
environment variables win: then nothing is changed.
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
M_ARENA_MAX = -8
# Blocks up to this size come from the heap and are reused (glibc's upper bound on 64-bit is 32 MiB).
MMAP_THRESHOLD = 32 * 1024 * 1024
# Free memory at the top of a heap or arena is kept up to this much before it is returned.
TRIM_THRESHOLD = 512 * 1024 * 1024

# Every thread allocates from the main arena.
ARENA_MAX = 1

_USER_SETTINGS = (
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",  # jemalloc, tcmalloc, ...: their own policy
)


def user_configured(env: Mapping[str, str]) -> str | None:
    """The environment variable by which the user chose the allocator's behaviour, if any."""
    return next((name for name in _USER_SETTINGS if env.get(name)), None)


def tune_allocator(env: Mapping[str, str] | None = None) -> bool:
    """Apply the serving thresholds and the one arena with ``mallopt``, before the server's threads
    allocate; True when applied (glibc, no user setting)."""
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
    return all(
        mallopt(param, value)
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_ARENA_MAX, ARENA_MAX),
        )
    )
