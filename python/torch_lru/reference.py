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


def rglru_loop(
    u: torch.Tensor,
    params: dict,
    c: float = 8.0,
    state: Optional[torch.Tensor] = None,
    reverse_params: Optional[dict] = None,
):
    """The RG-LRU layer (Griffin's recurrent block) from the paper's equations, one step at a time,
    with dense matrices: what a plain PyTorch port computes. ``params`` maps the names of
    ``torch.ops.torch_lru.rglru_parameter_names()`` to tensors; ``reverse_params`` (the ``*_rev``
    entries, suffix dropped) adds the second direction. Returns ``(y, state)`` with the state laid
    out as the op's: (B, 4, N), the convolution's last three inputs, then h.
    """
    B, L, _ = u.shape
    N = params["Lambda"].shape[0]
    x = u @ params["W_in_x"].T + params["b_in_x"]
    gate = torch.nn.functional.gelu(u @ params["W_in_gate"].T + params["b_in_gate"])
    conv_in = torch.zeros(B, 3, N, dtype=u.dtype) if state is None else state[:, :3]
    h0 = torch.zeros(B, N, dtype=u.dtype) if state is None else state[:, 3]

    def direction(p, xs, h, history, backwards):
        W_a, W_x = torch.block_diag(*p["W_a"]), torch.block_diag(*p["W_x"])
        a = torch.sigmoid(p["Lambda"])
        window = list(history.unbind(1))  # oldest first
        out = [None] * L
        for t in range(L - 1, -1, -1) if backwards else range(L):
            taps = window + [xs[:, t]]  # x_{t-3} .. x_t
            window = taps[1:]
            conv = p["conv_bias"] + sum(p["conv_weight"][j] * taps[3 - j] for j in range(4))
            r = torch.sigmoid(conv @ W_a + p["b_a"])
            i = torch.sigmoid(conv @ W_x + p["b_x"])
            a_t = a ** (c * r)
            h = a_t * h + torch.sqrt(1 - a_t**2) * (i * conv)
            out[t] = h
        return torch.stack(out, 1) if L else x.new_zeros(B, 0, N), h, torch.stack(window, 1)

    hs, h, window = direction(params, x, h0, conv_in, False)
    if reverse_params is not None:
        hs = hs + direction(reverse_params, x, torch.zeros_like(h0), torch.zeros_like(conv_in), True)[0]
    y = (gate * hs) @ params["W_out"].T + params["b_out"]
    return y, torch.cat([window, h.unsqueeze(1)], 1)
