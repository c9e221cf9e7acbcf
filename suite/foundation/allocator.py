"""
glibc's malloc told to keep the memory a process frees for its next use.

The collector allocates and frees buffers of a few hundred KiB to a few
MiB many times a second: each read of its channels and sockets, a
worker's frame, the batch its writer joins.  By default glibc returns the
free top of the heap to the kernel once it exceeds twice the largest
buffer lately freed, and maps buffers larger than that threshold afresh:
the next buffer then costs the kernel a fault and a zeroed page for every
4 KiB, which measured as a third of the parent's CPU with `workers = 2`
and a sizeable share of each worker's.  With fixed thresholds the heap
keeps up to TRIM bytes free at its top and serves buffers below MMAP
from the heap, so the same pages are used again.

Other C libraries (musl) have no such knobs: nothing changes there.
"""

import ctypes

MiB = 2**20
# mallopt's parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest M_MMAP_THRESHOLD glibc accepts on 64-bit systems: every frame and batch
# of the collector (16 MiB frames at most by default) fits below it.
MMAP = 32 * MiB
# Free memory kept at the heap's top: a few batches and frames' worth, so that a
# burst's buffers are not given back and taken again, and an idle collector holds
# no more than this beyond what it uses.
TRIM = 16 * MiB

_kept = False


def keep_freed_memory() -> bool:
    """Tune this process's malloc as above, once; whether glibc took the settings."""
    global _kept
    if _kept:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _kept = bool(mallopt(M_MMAP_THRESHOLD, MMAP)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM))
    return _kept
