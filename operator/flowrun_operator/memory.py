"""Keeping the process's resident memory near what is in use.

glibc keeps memory freed by the program (large response bodies, a burst's transient objects) inside its
heap, where it stays resident; `malloc_trim` gives its free pages back. Without glibc (musl, other
systems) these are no-ops. CPython's own small-object allocator is left in place: restarting on glibc's
malloc (PYTHONMALLOC=malloc) cost 19% more CPU in the limits benchmark and did not lower the RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)
TRIM_SECONDS = 30.0
M_ARENA_MAX = -8
# A young collection after 20,000 new tracked objects (not 700); the next generation after 20 of them.
GC_THRESHOLDS = (20_000, 20, 20)


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def few_malloc_arenas() -> None:
    """glibc gives every thread that allocates its own malloc arena; the API client's threads parse large
    responses, and memory freed in those arenas is rarely returned, so the RSS of a busy operator would
    follow its worst burst. Two arenas keep it near what is in use (MALLOC_ARENA_MAX=2, set at run time)."""
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.mallopt(M_ARENA_MAX, 2)


def trim() -> bool:
    """Return the heap's free pages to the system; True when glibc released some."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    return bool(libc.malloc_trim(0))


async def trim_periodically(seconds: float = TRIM_SECONDS) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            trim()
        except Exception as error:  # never fatal: memory is returned at the next try
            log.debug("malloc_trim failed: %s", error)


def tune_garbage_collection() -> None:
    """Fewer cyclic garbage collections. Measured while 10,000 runs were queued and drained (a probe timing
    every collection): with CPython's defaults (700, 10, 10) the collections took about 16% of the
    operator's CPU, most of it in full collections of about 0.15-0.2 s each, every 15-30 s, which walk every
    tracked object (the engine's records of 10,000 runs and the imported modules). With the imports frozen
    and these thresholds, about 7%, and two full collections in the whole run.

    Most garbage is freed at once by reference counting; the collector only finds reference cycles, which
    now wait a little longer. The objects alive at start (imported modules, classes, functions) are frozen:
    they live as long as the process, so walking them found nothing."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
