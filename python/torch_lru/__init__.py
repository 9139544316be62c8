"""torch_lru: the Linear Recurrent Unit for PyTorch, built on a fast complex diagonal scan op.

The names below are imported on first use, so that ``import torch_lru.lra`` (the data
generators and readers) loads neither the modules nor the compiled op library.
"""

import importlib

from ._version import __version__

# public name -> the submodule that defines it
_EXPORTS = {
    "LRU": "layers",
    "LRUBlock": "modules",
    "LRUModel": "modules",
    "RetrievalHead": "modules",
    "SequenceNorm": "modules",
    "lru": "ops",
    "lru_init": "ops",
    "lru_step": "ops",
    "scan": "ops",
    "save_state_dict": "checkpoint",
    "load_state_dict": "checkpoint",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    # a submodule not imported yet (torch_lru.modules after a bare `import torch_lru`)
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'torch_lru' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
