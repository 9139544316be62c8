#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU and no network, whose python3 already holds torch
# (2.11, CUDA 13), pytest and ninja. In under 8 minutes it:
#   1. builds the extension against that torch (pip install --no-build-isolation --no-deps -e .),
#   2. runs every CUDA test of the pytest suite (the CPU tests' assertions on the GPU),
#   3. runs compute-sanitizer memcheck and racecheck on small cases (caching allocator off),
#   4. runs the scan benchmark,
#   5. builds the LibTorch targets and runs ctest (GoogleTest from an installed package, or from a
#      source tree in $GTEST_SRC, default .carry/googletest; skipped with a note without either),
#   6. runs the LRU layer/model benchmark and a training step of each LRA config.
# Steps come in order of importance: the time budget below skips the last ones first.
# Logs and a summary go to $OUT (default runs/gpu_check). Exit status: non-zero if any step failed.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=${OUT:-$repo/runs/gpu_check}
mkdir -p "$out"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
summary="$out/summary.txt"
: >"$summary"
status=0

# The whole check stays within $GPU_CHECK_BUDGET_S (default 450 s): each step's limit is cut to
# what is left, and a step with under 15 s left is skipped (and reported as such).
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
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  printf '%-16s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$(tail -n 1 "$out/$name.log")" | tee -a "$summary"
  ((rc == 0)) || status=1
  return "$rc"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
  date -u +%Y-%m-%dT%H:%MZ
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

step build 300 "$py" -m pip install --no-build-isolation --no-deps -e . || { cat "$summary"; exit 1; }
# Every test that runs on CUDA (the CPU tests' assertions with device=cuda, and CUDA vs CPU); the
# CPU-only tests, the Python/C++ parity tests among them, run in CI.
step pytest-cuda 240 "$py" -m pytest tests -q -p no:cacheprovider -k cuda

# L = 257 spans three tiles of 128 steps (five of 64 for complex128): the look-back runs, in the
# default and in the deterministic mode.
san_case='import itertools, torch, torch_lru
for det, per_step, reverse in itertools.product((False, True), repeat=3):
    torch.use_deterministic_algorithms(det)
    for dtype in (torch.float32, torch.complex64, torch.complex128):
        B, L, N = 3, 257, 33
        x = torch.randn(B, L, N, device="cuda", dtype=dtype, requires_grad=True)
        lam = (0.9 * torch.rand((B, L, N) if per_step else (N,), device="cuda")).to(dtype).requires_grad_()
        h0 = torch.randn(B, N, device="cuda", dtype=dtype, requires_grad=True)
        h = torch_lru.scan(lam, x, h0, reverse)
        torch.autograd.grad(h.abs().sum(), (lam, x, h0))
torch.use_deterministic_algorithms(False)  # cuBLAS would want CUBLAS_WORKSPACE_CONFIG
model = torch_lru.LRUModel(3, d_model=32, d_state=16, n_layers=2, vocab_size=10, bidirectional=True).cuda()
tokens = torch.randint(0, 10, (4, 300), device="cuda")
mask = torch.arange(300, device="cuda") < torch.tensor([300, 100, 7, 1], device="cuda")[:, None]
model(tokens, mask).sum().backward()
torch.cuda.synchronize()
print("sanitizer case done")'
for tool in memcheck racecheck; do
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 step "sanitizer-$tool" 120 \
    compute-sanitizer --tool "$tool" --error-exitcode 1 "$py" -c "$san_case"
done

# Peers last within each size (torch.compile of the associative scan takes the longest); the JSON
# is rewritten after every size, so a cut-short run keeps what it measured.
step bench 200 "$py" scripts/bench_scan.py --device cuda --json "$out/bench_scan_cuda.json"
cp "$out/bench.log" "$out/bench_scan_cuda.txt" 2>/dev/null
gtest_src=${GTEST_SRC:-$repo/.carry/googletest}
prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
if [[ -d $gtest_src || -f /usr/include/gtest/gtest.h ]]; then
  step cmake-ctest 240 bash -c "cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH='$prefix' \
    -DTORCH_LRU_GTEST_SOURCE='$gtest_src' && cmake --build build-gpu -j $MAX_JOBS && cd build-gpu \
    && ctest --output-on-failure"
else
  echo "cmake-ctest      not run: no GoogleTest (install libgtest-dev or set GTEST_SRC)" | tee -a "$summary"
fi
step bench-lru 150 "$py" scripts/bench_lru.py --device cuda --json "$out/bench_lru_cuda.json"
step bench-train 150 "$py" scripts/bench_train.py --device cuda --steps 10 --json "$out/bench_train_cuda.json"

echo "== summary"
cat "$summary"
exit "$status"
