#!/usr/bin/env bash
# Creates (once) the project's Python environment and builds the extension into the source tree.
# The environment lives outside the clone, keyed by the pinned requirements, so fresh clones and
# CI runs reuse the download. Prints the environment's directory on the last line.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
key=$(sha256sum "$repo/requirements.txt" | cut -c1-12)
venv=${TORCH_LRU_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/torch-lru/venv-$key}

if [[ ! -f $venv/.complete ]]; then
  echo "setup_env: creating $venv" >&2
  # Environments of earlier requirements are several GB each: keep only the current one.
  [[ -z ${TORCH_LRU_VENV:-} ]] && rm -rf "$(dirname "$venv")"/venv-*
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
  "$venv/bin/python" -m pip install --quiet -r "$repo/requirements.txt"
  touch "$venv/.complete"
fi

# The built library is current when it is newer than every source it is built from (csrc/ops,
# csrc/include, cuda), the build files and the environment.
extension_is_current() {
  local lib
  lib=$(compgen -G "$repo/python/torch_lru/_C*.so" | head -n 1) || return 1
  [[ -n $lib ]] || return 1
  [[ -z $(find "$repo/csrc/ops" "$repo/csrc/include" "$repo/cuda" "$repo/setup.py" "$repo/pyproject.toml" \
    "$repo/CMakeLists.txt" "$venv/.complete" -newer "$lib" -print -quit) ]]
}

if [[ ${TORCH_LRU_SKIP_BUILD:-0} != 1 ]] && ! extension_is_current; then
  # CUDA sources are compiled whenever nvcc is present, GPU or not (setup.py names the default
  # architecture where there is no device to query). The compiler's output is kept in a log and
  # shown only if the build fails.
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  what="the CPU kernels"
  if [[ ${TORCH_LRU_CUDA:-auto} != 0 ]] && { command -v nvcc || [[ -x ${CUDA_HOME:-/usr/local/cuda}/bin/nvcc ]]; } >/dev/null; then
    what="the CPU and CUDA kernels"
  fi
  echo "setup_env: building the torch_lru extension ($what); the first build takes a few minutes" >&2
  mkdir -p "$repo/build"
  log="$repo/build/build_ext.log"
  if ! (cd "$repo" && "$venv/bin/python" setup.py --quiet build_ext --inplace) >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup_env: the extension build failed (its output is above and in $log)" >&2
    exit 1
  fi
fi
echo "$venv"
