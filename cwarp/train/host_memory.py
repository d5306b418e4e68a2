"""Whether freed host memory goes back to the OS: what ``cwarp-train --reuse-freed-memory`` sets.

A CPU training step allocates and frees the same large buffers (activations,
their gradients, convolution workspaces) every step. glibc's malloc serves a
block above its mmap threshold (32 MiB at most) with a fresh ``mmap`` and
hands it back with ``munmap`` when freed, so the next step faults every page
of those buffers in again, and the kernel zeroes each one: time spent in the
kernel, not in the step. ``keep_freed_memory(True)`` tells malloc to serve
every block from its heap and never to trim it, so a step reuses the pages of
the one before; the process keeps its peak footprint instead of shrinking
between steps.

The setting is process-wide and stays until changed; it only exists for
glibc (Linux). Elsewhere ``keep_freed_memory`` changes nothing and says so
by returning False.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from typing import Optional

__all__ = ["keep_freed_memory", "malloc_is_glibc"]

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# glibc's defaults, restored by keep_freed_memory(False). Setting them
# explicitly turns off glibc's sliding mmap threshold, which starts at the
# same 128 KiB.
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
# "Never trim": the largest value mallopt takes (an int).
_NEVER = 2 ** 31 - 1


@functools.lru_cache(maxsize=1)
def _libc() -> Optional[ctypes.CDLL]:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def malloc_is_glibc() -> bool:
    """Whether this process's malloc is glibc's, the one keep_freed_memory can set."""
    return _libc() is not None


def keep_freed_memory(enable: bool) -> bool:
    """Keep freed host memory for reuse (True) or give large blocks back to the OS as glibc does by default (False).

    Returns whether the setting took effect: False where malloc is not
    glibc's. Raises OSError if glibc refuses a setting.
    """
    libc = _libc()
    if libc is None:
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER)) if enable else (
        (_M_MMAP_MAX, _DEFAULT_MMAP_MAX), (_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD))
    for param, value in settings:
        if libc.mallopt(param, value) != 1:
            raise OSError(f"keep_freed_memory: glibc's mallopt({param}, {value}) refused the setting")
    return True
