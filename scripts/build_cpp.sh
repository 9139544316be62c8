#!/usr/bin/env bash
# Configures and builds the LibTorch targets (library, example, GoogleTest suite) against the
# project environment's torch. Usage: scripts/build_cpp.sh [BUILD_DIR] [extra cmake -D options]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$repo/build-cpp}
shift || true
venv=$(TORCH_LRU_SKIP_BUILD=1 "$repo/scripts/setup_env.sh" | tail -n 1)
prefix=$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
# CMake caches where torch was found: a build made against another environment starts afresh.
if [[ -f $build/CMakeCache.txt && "$(cat "$build/.torch-prefix" 2>/dev/null)" != "$prefix" ]]; then
  rm -rf "$build"
fi
mkdir -p "$build"
echo "$prefix" >"$build/.torch-prefix"
cuda=OFF
command -v nvcc >/dev/null && cuda=ON
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" -DCMAKE_PREFIX_PATH="$prefix" \
  -DTORCH_LRU_CUDA="$cuda" "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
