#!/usr/bin/env bash
# The main job. For now: set up the environment, build the extension and run the scan benchmark
# on the CPU, writing its table, figures (JSON) and plot under runs/bench_scan/ (or $TORCH_LRU_OUT).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${TORCH_LRU_OUT:-$repo/runs/bench_scan}
mkdir -p "$out"
"$repo/scripts/setup_env.sh" >/dev/null
"$repo/scripts/python" "$repo/scripts/bench_scan.py" --plot "$out/bench_scan_cpu.png" --json "$out/bench_scan_cpu.json" "$@" |
  tee "$out/bench_scan_cpu.txt"
