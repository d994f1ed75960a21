"""Process memory settings for long-running workers and engines.

With glibc's defaults (a dynamic mmap threshold and one malloc arena per thread) the frame-sized
buffers that decoder, queue and extractor threads allocate and free (0.25–1.3 MB each) end up in
fragmenting heap arenas, and the RSS of a 24/7 worker creeps up although nothing leaks
(``bench/soak.py`` measured +3.4 GB/h at 4× replay speed with the defaults, +17 MB/h with the
settings below). :func:`tune_malloc` applies them from inside the process (``mallopt``), which is
what ``fusewatch`` does at start-up; an explicit ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_``
in the environment wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune_malloc(arena_max: int = 2, mmap_threshold: int = 131072) -> dict[str, int]:
    """Cap glibc malloc arenas and serve allocations ≥ ``mmap_threshold`` bytes with mmap (returned
    to the OS on free). Returns what was applied; a no-op off glibc."""
    done: dict[str, int] = {}
    name = ctypes.util.find_library("c")
    if not name:
        return done
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return done
    if "MALLOC_ARENA_MAX" not in os.environ and mallopt(M_ARENA_MAX, int(arena_max)) == 1:
        done["arena_max"] = int(arena_max)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1:
        done["mmap_threshold"] = int(mmap_threshold)
    return done
