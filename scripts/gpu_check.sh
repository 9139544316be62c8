#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU and no network, whose python3 already holds torch
# (2.11, CUDA 13), pytest and ninja. Steps, in the order of what a short window must yield:
#   1. build the extension with CUDA required (a CPU-only build is an error, not a wall of
#      failed tests), and record nvcc, driver, torch and GPU in machine.txt;
#   2. a 30-second smoke test: the op on a few shapes against the CPU op;
#   3. the core correctness tests (CUDA vs CPU, repeats, streams, determinism, the out= variant);
#   4. the op against a copy of the same bytes (bench_copy: the bandwidth figures, within the
#      first four minutes), then the peers (bench_peers: JAX's and torch's associative scans, FFT);
#   5. compute-sanitizer memcheck and racecheck on the scan kernels only (not cuBLAS);
#   6. the rest: every CUDA test but the slow CPU-style ones, ctest (GoogleTest from an installed
#      package or a source tree in $GTEST_SRC, default .carry/googletest), bench_lru, bench_rglru, bench_stream, bench_train,
#      bench_train --compile (train.compile on the GPU).
# Every step runs under `timeout -k` and within the whole check's budget ($GPU_CHECK_BUDGET_S,
# default 450 s): a step is cut to what is left, and skipped (and reported) with under 15 s left.
# A look-back that stalls stops its kernel after TORCH_LRU_SCAN_TIMEOUT_MS (2 s here; 20 s under
# the sanitizer) with a message naming the tile, so a hang costs seconds, not the window.
# Logs and summary.txt go to $OUT (default runs/gpu_check). Exit status: non-zero if any step failed.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=${OUT:-$repo/runs/gpu_check}
mkdir -p "$out"
export MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
export TORCH_LRU_CUDA=1 TORCH_LRU_SCAN_TIMEOUT_MS=${TORCH_LRU_SCAN_TIMEOUT_MS:-2000}
py=${PYTHON:-python3}
summary="$out/summary.txt"
: >"$summary"
status=0
deadline=$((SECONDS + ${GPU_CHECK_BUDGET_S:-450}))

step() {  # step NAME TIMEOUT_S COMMAND...: runs COMMAND, logs to $out/NAME.log, records the result
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS rc left=$((deadline - SECONDS))
  if ((left < 15)); then
    printf '%-16s skipped: the time budget is spent\n' "$name" | tee -a "$summary"
    status=1
    return 1
  fi
  ((limit > left)) && limit=$left
  timeout -k 10 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  ((rc == 124 || rc == 137)) && echo "(stopped at its ${limit} s limit)" >>"$out/$name.log"
  printf '%-16s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$(tail -n 1 "$out/$name.log")" | tee -a "$summary"
  ((rc == 0)) || status=1
  return "$rc"
}

nvcc_bin=$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")
sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
{
  date -u +%Y-%m-%dT%H:%MZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
  "$nvcc_bin" --version | tail -n 2
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
  nproc
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

# 1. Build, with CUDA required; then prove the CUDA kernels are registered.
if [[ ! -x $nvcc_bin ]]; then
  echo "build            failed: nvcc not found (PATH or CUDA_HOME): a CPU-only build would test nothing" | tee -a "$summary"
  exit 1
fi
step build 240 "$py" -m pip install --no-build-isolation --no-deps -e . || { cat "$summary"; exit 1; }
step has-cuda 30 "$py" -c '
import torch, torch_lru
assert torch.cuda.is_available(), "no GPU visible"
assert torch._C._dispatch_has_kernel_for_dispatch_key("torch_lru::scan", "CUDA"), "built without the CUDA kernels"
print("CUDA kernels registered on", torch.cuda.get_device_name())' || { cat "$summary"; exit 1; }

# 2. Smoke: the op on a few shapes against the CPU op, forward and backward.
step smoke 30 "$py" -c '
import torch, torch_lru
for B, L, N, per_step in [(1, 1, 1, False), (2, 300, 33, True), (3, 4097, 64, False), (1, 200000, 2, False)]:
    g = torch.Generator().manual_seed(L)
    x = torch.randn(B, L, N, generator=g, dtype=torch.complex64)
    lam = (0.99 * torch.rand((B, L, N) if per_step else (N,), generator=g)).to(torch.complex64)
    want = torch_lru.scan(lam, x)
    got = torch_lru.scan(lam.cuda(), x.cuda()).cpu()
    err = (got - want).abs().max().item() / max(want.abs().max().item(), 1)
    gw = torch.ops.torch_lru.scan_backward(x, lam, want, None, False, [True, True, False])
    gg = torch.ops.torch_lru.scan_backward(x.cuda(), lam.cuda(), want.cuda(), None, False, [True, True, False])
    gerr = max(((a.cpu() - b).abs().max() / b.abs().max().clamp_min(1)).item() for a, b in zip(gg[:2], gw[:2]))
    assert err < 1e-4 and gerr < 1e-3, (B, L, N, per_step, err, gerr)
    print(f"({B}, {L}, {N}) per_step={per_step}: forward {err:.1e}, backward {gerr:.1e} relative error")
print("smoke ok")'

# 3. The core correctness tests.
step core-tests 90 "$py" -m pytest tests/test_scan.py -q -p no:cacheprovider -x \
  -k "cuda_matches_cpu or cuda_repeats or cuda_two_streams or cuda_long_single_chain or (deterministic and cuda) or (out_variant and cuda and not compile) or (out_may_be and cuda) or (backward_matches and cuda)"

# 4. The bandwidth figures: op against copy first; the peers after.
step bench-copy 90 "$py" scripts/bench_scan.py --device cuda --peers "" --no-loop --json "$out/bench_copy.json"
step bench-peers 150 "$py" scripts/bench_scan.py --device cuda --json "$out/bench_peers.json"

# 5. compute-sanitizer on the scan kernels only. L = 257 spans several tiles: the look-back runs,
# in the default and the deterministic mode.
san_case='import itertools, torch, torch_lru
for det, per_step, reverse in itertools.product((False, True), repeat=3):
    torch.use_deterministic_algorithms(det)
    for dtype in (torch.float32, torch.complex64, torch.complex128):
        B, L, N = 3, 257, 33
        x = torch.randn(B, L, N, device="cuda", dtype=dtype)
        lam = (0.9 * torch.rand((B, L, N) if per_step else (N,), device="cuda")).to(dtype)
        h0 = torch.randn(B, N, device="cuda", dtype=dtype)
        h = torch_lru.scan(lam, x, h0, reverse)
        torch.ops.torch_lru.scan_backward(torch.randn_like(h), lam, h, h0, reverse, [True, True, True])
torch.cuda.synchronize()
print("sanitizer case done")'
filter=()
"$sanitizer" --help 2>/dev/null | grep -q -- "--kernel-name" && filter=(--kernel-name kns=tiled_scan_kernel)
for tool in memcheck racecheck; do
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 TORCH_LRU_SCAN_TIMEOUT_MS=20000 step "sanitizer-$tool" 100 \
    "$sanitizer" --tool "$tool" "${filter[@]}" --error-exitcode 1 "$py" -c "$san_case"
done

# 6. The rest. The CPU-style loops (a Python loop with autograd over thousands of steps,
# gradgradcheck, inductor compiles) say nothing about the kernels: CI runs them on the CPU.
step pytest-cuda 200 "$py" -m pytest tests -q -p no:cacheprovider -k "cuda and not gradgrad and not inductor and not compile and not split_along_length and not long_sequence"
gtest_src=${GTEST_SRC:-$repo/.carry/googletest}
prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
if [[ -d $gtest_src || -f /usr/include/gtest/gtest.h ]]; then
  step cmake-ctest 200 bash -c "cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH='$prefix' \
    -DTORCH_LRU_GTEST_SOURCE='$gtest_src' && cmake --build build-gpu -j $MAX_JOBS && cd build-gpu \
    && ctest --output-on-failure"
else
  echo "cmake-ctest      not run: no GoogleTest (install libgtest-dev or set GTEST_SRC)" | tee -a "$summary"
fi
step bench-lru 120 "$py" scripts/bench_lru.py --device cuda --json "$out/bench_lru_cuda.json"
# The RG-LRU layer against the LRU layer and against its Python loop over time.
step bench-rglru 90 "$py" scripts/bench_rglru.py --device cuda --json "$out/bench_rglru_cuda.json"
# Streaming: the model's step, eager against a CUDA graph of it, B=1 and B=256.
step bench-stream 90 "$py" scripts/bench_stream.py --device cuda --no-compile --batches 1,256 --tokens 100 \
  --json "$out/bench_stream_cuda.json"
step bench-train 120 "$py" scripts/bench_train.py --device cuda --steps 10 --json "$out/bench_train_cuda.json"
# train.compile on the GPU: eager against compiled steps, compile time apart (it is off by default
# on CUDA until this has been measured).
step bench-train-compile 240 "$py" scripts/bench_train.py --device cuda --steps 10 --tasks listops,image --compile \
  --json "$out/bench_train_compile_cuda.json"

echo "== summary"
cat "$summary"
exit "$status"
