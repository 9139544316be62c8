"""Timing shared by the benchmarks: the median of repeated calls, with the heap warmed first.

On the CPU an allocating call that gets fresh pages from the kernel pays a page fault per 4 KB,
which costs more than the kernels measured here. `warm_heap()` restarts the script with glibc told
to keep freed memory (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) and to keep no per-thread
cache of small blocks (glibc.malloc.tcache_count=0). The last matters: PyTorch asks for 64-byte
aligned blocks, glibc's aligned allocation carves the block out of a larger one and frees the
small remainder, and a remainder held in the per-thread cache keeps the large block, once freed,
from merging with its neighbours; the next call's request then does not fit in it and the heap
grows (fresh pages, every call, for five or six calls at 512 MB). `median_seconds` also warms a
function up until one of its calls takes (almost) no page faults, and says on stderr when the timed
calls still took some (their figures then include the faults).
"""

import os
import resource
import statistics
import sys
import time

import torch

HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36)}
NO_TCACHE = "glibc.malloc.tcache_count=0"
MAX_WARMUP_CALLS = 12
NOTED_FAULTS = 256  # per call (1 MB of fresh pages): fewer are the small allocations of any call


def heap_is_warm():
    return os.environ.get("MALLOC_MMAP_THRESHOLD_") is not None


def warm_heap():
    """Restart this script with glibc told to keep freed memory (it reads the variables at start-up)."""
    if not heap_is_warm():
        # orig_argv: the interpreter's own options and a -c program survive the restart too
        tunables = ":".join(t for t in (os.environ.get("GLIBC_TUNABLES"), NO_TCACHE) if t)
        env = dict(os.environ, **HEAP_ENV, GLIBC_TUNABLES=tunables)
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def median_seconds(fn, device, min_time=0.4, max_reps=50, min_reps=3, max_warmup=MAX_WARMUP_CALLS, label=None):
    """Median seconds of one call of fn, after warm-up calls.

    On the CPU with a warm heap the warm-up repeats until a call takes fewer than NOTED_FAULTS page faults (at most
    max_warmup calls); with glibc's defaults every large output is a fresh mapping, so one
    warm-up call is all that can help. On CUDA each call is synchronised.
    """
    cuda = str(device).startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    warmups = max_warmup if (not cuda and heap_is_warm()) else 1
    for _ in range(warmups):
        before = _faults()
        fn()
        sync()
        if _faults() - before < NOTED_FAULTS:
            break
    times, faults = [], 0
    start = time.perf_counter()
    while len(times) < max_reps and (time.perf_counter() - start < min_time or len(times) < min_reps):
        before = _faults()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        faults += _faults() - before
    if not cuda and heap_is_warm() and faults / len(times) >= NOTED_FAULTS:
        name = f" ({label})" if label else ""
        print(f"note{name}: {faults / len(times):.0f} page faults per timed call", file=sys.stderr, flush=True)
    return statistics.median(times)
