"""Keep freed memory in the process instead of handing it back to the OS after every tensor (glibc only).

Why: glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB, usually much
less) with a fresh ``mmap`` and returns it with ``munmap`` when the tensor dies. A training step of the
paper-size network at batch 128 creates dozens of 30-120 MB activations, so every step re-faults millions
of zero-filled pages: on the project's 2-core machine 2.4 M minor page faults and about 9 s of kernel time
per 18 s step in a fresh process (``benchmarks/speed.py`` counts them). Serving large blocks from the heap
and not trimming it makes them reusable: the same step then has no page faults and runs about 1.5x
faster; the literal network gains even more. The cost is that the process keeps its peak memory until it
exits, which a training or scoring process reaches anyway.

``statevad`` applies it at the start of every command; set ``STATEVAD_MALLOC=default`` to keep glibc's
defaults. Library users call :func:`keep_freed_memory` themselves if they want it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP = 2**31 - 1  # mallopt takes an int: blocks up to 2 GiB come from the heap, 2 GiB of free top is kept

ENV = "STATEVAD_MALLOC"


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds so that freed tensors are reused, not unmapped.

    Returns True when the setting took effect; False on other C libraries (macOS, Windows, musl), or when
    ``STATEVAD_MALLOC=default`` asks for glibc's defaults. Calling it again is harmless.
    """
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _KEEP))


def _glibc() -> ctypes.CDLL | None:
    """The C library this process already runs on when it is glibc (no library search), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has mallopt as a no-op stub
    except (OSError, AttributeError):
        return None
    return libc


def _mallopt() -> Any:
    """glibc's ``mallopt``, or None (not glibc, or ``STATEVAD_MALLOC=default``)."""
    libc = _glibc()
    if libc is None or os.environ.get(ENV, "").lower() == "default":
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def release_free_memory() -> bool:
    """Hand the free memory inside malloc's arenas back to the OS now (glibc's ``malloc_trim(0)``).

    Why: a process that runs for days (``statevad serve``) allocates tensors of ever-changing sizes (the
    number of objects per batch varies), so its heaps fragment: the bytes in use stay flat while the free
    holes between them, which :func:`keep_freed_memory` never returns, grow for as long as it runs
    (measured: ``benchmarks/serve_memprobe.py``). ``malloc_trim`` gives back whole free pages anywhere in
    every arena, not only the top; the memory stays reserved, so a later allocation re-faults pages
    instead of growing the heap. Returns False where there is no glibc (nothing done).
    """
    libc = _glibc()
    if libc is None:
        return False
    trim = libc.malloc_trim
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


def return_large_blocks(mmap_threshold: int = 1 << 20) -> bool:
    """Serve every block of ``mmap_threshold`` bytes or more with its own ``mmap``, unmapped when freed
    (glibc): the opposite trade of :func:`keep_freed_memory`, for a process that runs for days.

    Why: ``statevad serve`` scores batches whose tensors change size with the number of objects in view.
    Served from the heap, such blocks fragment it: the bytes in use stay flat while the heap grows by
    another block whenever no free hole is large enough, so RSS climbs for as long as the service runs
    (``benchmarks/serve_memprobe.py``). Mapped blocks go back to the OS at once; the price is the page
    faults of each new block. Setting the threshold also stops glibc from raising it on its own. Returns
    False where there is no glibc, or when ``STATEVAD_MALLOC=default`` asks for glibc's defaults.
    """
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, 64 << 20))
