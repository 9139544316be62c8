"""torch_lru: the Linear Recurrent Unit for PyTorch, built on a fast complex diagonal scan op."""

from .ops import scan

__version__ = "0.1.0"
__all__ = ["scan"]
