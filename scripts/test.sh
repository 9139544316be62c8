#!/usr/bin/env bash
# Runs every test: sets up the environment and builds the extension (reusing both when present),
# then the style checks, the LibTorch build, the Python suite (with the Python/C++ parity tests),
# the GoogleTest suite and the examples under ctest, the installed library used from a separate
# CMake project, and the C++ suite built with AddressSanitizer + UndefinedBehaviorSanitizer.
# CUDA sources are compiled in every build; CUDA tests run only where a GPU is present.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# Runs a build step, showing its output only if it fails.
quiet() {
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    cat "$log"
    echo "test.sh: failed: $*" >&2
    exit 1
  fi
  rm -f "$log"
}

echo "== environment and extension build"
quiet scripts/setup_env.sh

echo "== style (ruff, clang-format)"
venv=$(TORCH_LRU_SKIP_BUILD=1 scripts/setup_env.sh | tail -n 1)
"$venv/bin/ruff" format --check --quiet python tests scripts setup.py
"$venv/bin/ruff" check --quiet python tests scripts setup.py
cpp_files=$(git ls-files '*.h' '*.cpp' '*.cu')
if command -v clang-format >/dev/null; then
  clang-format --dry-run -Werror $cpp_files
else
  echo "clang-format not installed: C++ formatting not checked (apt-get install clang-format)"
fi

echo "== LibTorch build"
quiet scripts/build_cpp.sh build-cpp

echo "== Python tests (the Python/C++ parity tests use the LibTorch build)"
TORCH_LRU_CPP_BUILD="$repo/build-cpp" TORCH_LRU_REQUIRE_CPP=1 scripts/python -m pytest tests -q -p no:cacheprovider

echo "== C++ tests and examples"
(cd build-cpp && ctest --output-on-failure)

echo "== installed library used from a separate CMake project"
torch_prefix=$("$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
quiet cmake --install build-cpp --prefix build-cpp/install
quiet cmake -S tests/cpp_install -B build-cpp/install-check -G Ninja -DCMAKE_MAKE_PROGRAM="$venv/bin/ninja" \
  -DCMAKE_PREFIX_PATH="$repo/build-cpp/install;$torch_prefix"
quiet cmake --build build-cpp/install-check
build-cpp/install-check/install_check

echo "== C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer"
# The sanitizer build checks host code; the CUDA kernels are compiled by the builds above.
quiet scripts/build_cpp.sh build-asan -DTORCH_LRU_SANITIZE=ON -DTORCH_LRU_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
(cd build-asan && ASAN_OPTIONS=protect_shadow_gap=0 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure)
