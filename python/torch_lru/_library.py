"""Loads the compiled op library, which registers torch.ops.torch_lru.*."""

import glob
import os

import torch


def load():
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "_C*.so")))
    if not found:
        raise ImportError(
            f"torch_lru: the compiled extension (_C*.so) is missing from {here}; "
            "build it with scripts/setup_env.sh or `pip install --no-build-isolation .`"
        )
    torch.ops.load_library(found[0])
    return found[0]


LIBRARY_PATH = load()
