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

if [[ ${TORCH_LRU_SKIP_BUILD:-0} != 1 ]]; then
  # CUDA sources are compiled whenever nvcc is present, GPU or not (setup.py names the default
  # architecture where there is no device to query).
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  (cd "$repo" && "$venv/bin/python" setup.py --quiet build_ext --inplace >&2)
fi
echo "$venv"
