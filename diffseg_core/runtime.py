"""Process-wide settings of the CPU path: glibc's allocator keeps freed big blocks.

glibc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB)
with fresh pages and gives them back on free, so each 16-64 MB temporary of the post-UNet
math (the KL merge's log buffer, its matrix-product workspaces, the NMS maps) faults its
pages in again on first touch, frame after frame. On a 2-core CPU that was about a quarter
of the post-UNet path (diagnostic in benchmarks/RESULTS.md). With the threshold at 1 GiB,
such blocks come from the heap and a freed block is reused by the next frame.

The cost: memory freed below the threshold can stay with the process (glibc gives back only
free space at the top of its heap), so its resident size can stay near its peak instead of
shrinking between frames; blocks of 1 GiB and more are still returned. `DiffSegSegmenter` applies this once, the first time it segments on a CPU device;
``DIFFSEG_MALLOC=default`` in the environment keeps glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

#: the environment variable that keeps glibc's allocator defaults (``default``)
ENV = "DIFFSEG_MALLOC"
#: allocations below this many bytes come from the heap (freed ones are reused)
MMAP_THRESHOLD = 1 << 30
_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>

_state: dict[str, bool] = {}


def tune_cpu_allocator(threshold: int = MMAP_THRESHOLD) -> bool:
    """Raise glibc's mmap threshold to ``threshold`` bytes, once per process.

    Returns:
        True when the setting is in force (now or from an earlier call); False where it
        does not apply: not glibc (macOS, Windows, musl), ``DIFFSEG_MALLOC=default``, or
        glibc refused the value.
    """
    if "applied" in _state:
        return _state["applied"]
    ok = False
    if os.environ.get(ENV, "").strip().lower() == "default":
        log.debug("%s=default: glibc's allocator settings kept", ENV)
    elif sys.platform.startswith("linux"):
        try:
            mallopt = getattr(_libc(), "mallopt", None)
            ok = bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, int(threshold)))
        except OSError:
            ok = False
    _state["applied"] = ok
    return ok


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
