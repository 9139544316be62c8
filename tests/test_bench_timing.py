"""The benchmarks' timer: with a warm heap, allocating calls are timed only once they reuse memory."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A 64 MB output per call: glibc's aligned allocation grows the heap for the first few calls even
# when told to keep freed memory, and each of those calls pays about 16k page faults.
CODE = """
import sys
import torch
from bench_timing import heap_is_warm, median_seconds, warm_heap
warm_heap()
assert heap_is_warm()
g = torch.ones(8 * 2**20, dtype=torch.complex64)
seconds = median_seconds(lambda: torch.neg(g), "cpu", min_time=0.05, label=sys.argv[1])
assert seconds > 0
"""


def run_timer(label, code=CODE):
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(name, None)  # the script sets them itself
    done = subprocess.run([sys.executable, "-c", code, label], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_the_timed_calls_of_an_allocating_op_take_no_page_faults():
    assert "page faults per timed call" not in run_timer("neg")


def test_one_warm_up_call_is_not_enough_and_is_reported():
    # What the default warm-up avoids, seen in the timer's own report when it is cut to one call.
    stderr = run_timer("one", CODE.replace("min_time=0.05,", "min_time=0.05, max_warmup=1,"))
    assert "note (one):" in stderr and "page faults per timed call" in stderr
