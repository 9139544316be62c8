"""torch_lru: the Linear Recurrent Unit for PyTorch, built on a fast complex diagonal scan op."""

from .checkpoint import load_state_dict, save_state_dict
from .modules import LRU, LRUBlock, LRUModel, RetrievalHead, SequenceNorm
from .ops import lru, lru_init, lru_step, scan

__version__ = "0.1.0"
__all__ = [
    "LRU",
    "LRUBlock",
    "LRUModel",
    "RetrievalHead",
    "SequenceNorm",
    "lru",
    "lru_init",
    "lru_step",
    "scan",
    "save_state_dict",
    "load_state_dict",
]
