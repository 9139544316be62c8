"""State-dict checkpoints that Python and LibTorch programs both read.

The file is an ordinary ``torch.save`` file holding a plain ``dict`` of CPU tensors (names as in
``module.state_dict()``). A plain dict, not the ``OrderedDict`` that ``state_dict()`` returns:
LibTorch's reader (``torch::pickle_load``, used by ``torch_lru::load_state_dict`` in C++) cannot
rebuild an OrderedDict. Python reads either kind.
"""

import os
from pathlib import Path
from typing import Union

import torch
from torch import nn

PathLike = Union[str, os.PathLike]


def atomic_save(obj, path: PathLike) -> None:
    """torch.save to a temporary file beside ``path``, renamed over it: never half a file."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


def save_state_dict(module: nn.Module, path: PathLike) -> None:
    """Writes ``module``'s parameters and buffers to ``path`` (atomically)."""
    atomic_save({name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}, path)


def load_state_dict(module: nn.Module, path: PathLike, strict: bool = True):
    """Loads a checkpoint written by :func:`save_state_dict`, by ``torch_lru::save_state_dict`` in
    C++, or by ``torch.save(module.state_dict(), path)``, onto the module's own device."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return module.load_state_dict(state, strict=strict)
