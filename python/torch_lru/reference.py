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


def lru_loop(
    u: torch.Tensor,
    nu_log: torch.Tensor,
    theta_log: torch.Tensor,
    gamma_log: torch.Tensor,
    B_re: torch.Tensor,
    B_im: torch.Tensor,
    C_re: torch.Tensor,
    C_im: torch.Tensor,
    D: Optional[torch.Tensor],
    state: Optional[torch.Tensor] = None,
    reverse: bool = False,
    scan=scan_loop,
):
    """The LRU's equations as the paper writes them, with complex matrices and (by default) a
    Python loop over time: ``x_k = lambda x_{k-1} + gamma (B u_k)``, ``y_k = Re(C x_k) + D u_k``.

    This is how plain PyTorch ports of the LRU compute it; returns ``(y, x)`` with all states x.
    """
    lam = torch.exp(-torch.exp(nu_log) + 1j * torch.exp(theta_log))
    B = torch.complex(B_re, B_im) * torch.exp(gamma_log).unsqueeze(-1)
    C = torch.complex(C_re, C_im)
    x = scan(lam, u.to(lam.dtype) @ B.transpose(0, 1), state, reverse)
    y = (x @ C.transpose(0, 1)).real
    return (y + D * u if D is not None else y), x
