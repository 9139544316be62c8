"""The scan benchmark's --sizes argument: a malformed size gets a one-line error naming it, and a
given size is the one measured."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_bench(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "python"), str(REPO / "scripts")]))
    command = [sys.executable, str(REPO / "scripts" / "bench_scan.py"), "--peers", "", "--no-loop", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("bad", ["1x4096", "1x4096x64x2", "0x64x8", "1x-4x8", "axbxc", ""])
def test_malformed_sizes_are_refused_in_one_line(bad):
    done = run_bench("--sizes", bad, "--no-backward")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--sizes" in lines[0] and repr(bad) in lines[0], done.stderr


def test_the_given_sizes_are_the_ones_measured(tmp_path):
    out = tmp_path / "figures.json"
    done = run_bench("--sizes", "2x64x8,1X32x4", "--no-backward", "--json", str(out))
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["size"] for row in rows] == [[2, 64, 8], [1, 32, 4]]
