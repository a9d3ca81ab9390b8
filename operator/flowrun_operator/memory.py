"""Keeping the process's resident memory near what is in use.

glibc keeps memory freed by the program (large response bodies, a burst's transient objects) inside its
heap, where it stays resident; `malloc_trim` gives the free pages back. Without glibc (musl, other
systems) these are no-ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)
TRIM_SECONDS = 30.0
M_ARENA_MAX = -8


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def system_malloc_command(environ: Mapping[str, str], orig_argv: list[str]) -> list[str] | None:
    """The command line that restarts this interpreter on glibc's malloc, or None when it should not.

    CPython's own small-object allocator returns a 1 MiB arena to the system only once every object in it
    is freed, so after a burst (thousands of events, writes and Events at once) the few records that
    outlive it keep most arenas resident, and the operator's RSS stays at its peak. On glibc's malloc,
    `trim_periodically` gives free pages back. PYTHONMALLOC set to anything (e.g. `pymalloc`) keeps the
    interpreter as started."""
    if environ.get("PYTHONMALLOC") or not sys.platform.startswith("linux") or not orig_argv:
        return None
    return list(orig_argv)


def use_system_malloc() -> None:
    command = system_malloc_command(os.environ, list(getattr(sys, "orig_argv", [])))
    if command is None:
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


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
