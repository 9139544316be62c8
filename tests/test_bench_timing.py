"""The benchmarks' timer: with a warm heap, allocating calls are timed only once they reuse memory,
and timed calls that still take page faults are reported."""

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A 64 MB output per call (16k pages), timed after one warm-up call.
CODE = """
import sys
import torch
from bench_timing import heap_is_warm, median_seconds, warm_heap
warm_heap()
assert heap_is_warm()
g = torch.ones(8 * 2**20, dtype=torch.complex64)
kept = []
fn = {"neg": lambda: torch.neg(g), "kept": lambda: kept.append(torch.neg(g))}[sys.argv[1]]
assert median_seconds(fn, "cpu", min_time=0.05, max_reps=5, max_warmup=1, label=sys.argv[1]) > 0
"""


def run_timer(case):
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(name, None)  # the script sets them itself
    done = subprocess.run([sys.executable, "-c", CODE, case], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_an_allocating_op_reuses_its_memory_from_the_second_call():
    # Without glibc's per-thread cache a freed 64 MB block fits the next request of the same size.
    assert "page faults per timed call" not in run_timer("neg")


def test_timed_calls_that_take_fresh_pages_are_reported():
    # Every output kept: each call must grow the heap by 64 MB.
    found = re.search(r"note \(kept\): (\d+) page faults per timed call", run_timer("kept"))
    assert found and int(found.group(1)) >= 16384, found
