"""Python entry points of the torch_lru ops (the kernels and autograd live in C++)."""

from typing import Optional

import torch

from . import _library  # noqa: F401  (registers torch.ops.torch_lru)


def scan(
    lam: torch.Tensor,
    x: torch.Tensor,
    h0: Optional[torch.Tensor] = None,
    reverse: bool = False,
    *,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Linear recurrence ``h_t = lam_t * h_{t-1} + x_t`` along dimension 1 of ``x``.

    Args:
        lam: the recurrence coefficients, shape ``(N,)`` (one per channel, as in the LRU) or
            ``(B, L, N)`` (one per step, as in gated linear RNNs).
        x: the inputs, shape ``(B, L, N)``; float32, float64, complex64 or complex128.
        h0: optional initial state ``(B, N)`` (``h_{-1}``; zero when omitted).
        reverse: run the recurrence from ``t = L-1`` down to ``0`` (``h_t = lam_t * h_{t+1} + x_t``).
        out: optional contiguous tensor of ``x``'s shape, dtype and device to write ``h`` into (it
            may be ``x`` itself, for an in-place scan). Not differentiable.

    All tensors share one dtype and device; any strides are accepted. Returns ``h`` of shape
    ``(B, L, N)``, contiguous. Differentiable with respect to ``lam``, ``x`` and ``h0`` (gradients
    in PyTorch's conjugate-Wirtinger convention), traceable by ``torch.compile`` and ``torch.export``.
    """
    if out is not None:
        return torch.ops.torch_lru.scan.out(lam, x, h0, reverse, out=out)
    return torch.ops.torch_lru.scan(lam, x, h0, reverse)
