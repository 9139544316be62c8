"""Checkpoints that Python and LibTorch programs both read, and that are safe to load.

The files are ordinary ``torch.save`` files holding only tensors and plain containers (dicts,
lists, tuples, strings, numbers), so they are always read with ``torch.load(weights_only=True)``:
a file holding any other object (a planted pickle that would run code) is refused, never run.

A state dict is saved as a plain ``dict`` of CPU tensors, not the ``OrderedDict`` that
``state_dict()`` returns: LibTorch's reader (``torch::pickle_load``, used by
``torch_lru::load_state_dict`` in C++) cannot rebuild an OrderedDict. Python reads either kind.
"""

import os
import pickle
import re
from pathlib import Path
from typing import Union

import torch
from torch import nn

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, or read safely: the message names the file and why."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def atomic_save(obj, path: PathLike) -> None:
    """torch.save to a temporary file beside ``path``, renamed over it: never half a file. A failed
    write (a full disk, say) leaves the previous file as it was and raises CheckpointError."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save(obj, partial)
        os.replace(partial, path)
    except (OSError, RuntimeError) as e:
        partial.unlink(missing_ok=True)
        raise CheckpointError(
            f"{path}: could not be written ({_first_line(e)}; is the disk full?); the previous file is unchanged"
        ) from None


def load_checkpoint(path: PathLike):
    """Reads a file written by :func:`atomic_save` or ``torch.save``, with ``weights_only=True``.

    Raises CheckpointError naming the file when it is missing, truncated or corrupt, or holds
    anything but tensors and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph; the unpickler's own reason follows its marker.
        after = str(e).split("WeightsUnpickler error:", 1)[-1]
        reason = next((line.strip() for line in after.splitlines() if line.strip()), "")
        hostile = re.search(r"Unsupported global: GLOBAL (\S+)", reason)
        if hostile:
            raise CheckpointError(
                f"{path}: refused: it holds {hostile.group(1)}, not only tensors and plain containers, and loading "
                "it could run code"
            ) from None
        raise CheckpointError(f"{path}: not a readable torch.save file, truncated or corrupt ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise CheckpointError(
            f"{path}: not a readable torch.save file, truncated or corrupt ({_first_line(e)})"
        ) from None


def save_state_dict(module: nn.Module, path: PathLike) -> None:
    """Writes ``module``'s parameters and buffers to ``path`` (atomically)."""
    atomic_save({name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}, path)


def load_state_dict(module: nn.Module, path: PathLike, strict: bool = True):
    """Loads a checkpoint written by :func:`save_state_dict`, by ``torch_lru::save_state_dict`` in
    C++, or by ``torch.save(module.state_dict(), path)``, onto the module's own device."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a state dict (str -> Tensor), got a {type(state).__name__}")
    return module.load_state_dict(state, strict=strict)
