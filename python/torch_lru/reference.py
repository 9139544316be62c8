"""Plain PyTorch implementations used as references and baselines (slow: a Python loop over t)."""

from typing import Optional

import torch


def scan_loop(lam: torch.Tensor, x: torch.Tensor, h0: Optional[torch.Tensor] = None, reverse: bool = False):
    """The scan's definition, one step at a time: ``h_t = lam_t * h_{t-1} + x_t``.

    Same contract as :func:`torch_lru.scan`; differentiable through ordinary autograd.
    """
    B, L, N = x.shape
    h = torch.zeros(B, N, dtype=x.dtype, device=x.device) if h0 is None else h0
    # unbind once: indexing x[:, t] in the loop would make autograd write a full-size gradient per step
    xs = x.unbind(1)
    lams = lam.unbind(1) if lam.dim() == 3 else [lam] * L
    out = []
    for t in range(L - 1, -1, -1) if reverse else range(L):
        h = lams[t] * h + xs[t]
        out.append(h)
    if reverse:
        out.reverse()
    return torch.stack(out, dim=1) if out else torch.empty_like(x)
