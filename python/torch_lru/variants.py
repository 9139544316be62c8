"""The recurrent layers of the paper's ablation, from a tanh RNN to the LRU one change at a time,
and two diagonal state-space baselines, all with the LRU's interface (``forward(u, mask=None)``
on (B, L, H) real sequences) so that the block around them stays the same.

- ``tanh_rnn``: x_k = tanh(A x_{k-1} + B u_k + b), y_k = C x_k + D u_k (torch.nn.RNN).
- ``linear_dense``: x_k = A x_{k-1} + B u_k with a dense real A (a loop over time), y = C x + D u.
- ``diag_complex``: complex diagonal recurrence, lambda's real and imaginary parts the parameters.
- ``diag_exp``: lambda = exp(-exp(nu_log) + i exp(theta_log)), no gamma normalisation.
- ``lru``: the full LRU (torch_lru.LRU).
- ``s5``, ``s4d``: continuous-time diagonal systems x' = Lambda x + B u discretised by zero-order
  hold with learnable log time steps: lambda = exp(Delta Lambda), B_bar = (lambda - 1) / Lambda * B.
  S5 starts from the eigenvalues of HiPPO-N (Smith et al. 2023), S4D from S4D-Lin,
  Lambda_n = -1/2 + i pi n (Gu et al. 2022).

The diagonal variants run on the scan op through ``torch.ops.torch_lru.diag_recurrence``, the
same kernel path as the LRU.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .modules import LRU, eigenvalues

LAYERS = ("tanh_rnn", "linear_dense", "diag_complex", "diag_exp", "lru", "s5", "s4d")


def check_layer(name: str) -> str:
    if name not in LAYERS:
        raise ValueError(f"unknown recurrent layer {name!r}; the layers are {', '.join(LAYERS)}")
    return name


def _complex_normal(shape, scale):
    return torch.randn(*shape) * scale, torch.randn(*shape) * scale


def _directions(bidirectional: bool):
    return (False, True) if bidirectional else (False,)


class _DiagonalLayer(nn.Module):
    """Shared by the diagonal variants: lambda and B from the subclass, C and D as in the LRU.
    Parameters of the reverse direction carry the suffix ``_rev``."""

    def __init__(self, d_model: int, d_state: int, bidirectional: bool):
        super().__init__()
        self.d_model, self.d_state, self.bidirectional = d_model, d_state, bidirectional
        for reverse in _directions(bidirectional):
            c_re, c_im = _complex_normal((d_model, d_state), 1 / math.sqrt(d_state))
            self._register(reverse, C_re=c_re, C_im=c_im)
        self.D = nn.Parameter(torch.randn(d_model))

    def _register(self, reverse: bool, **values: torch.Tensor) -> None:
        for name, value in values.items():
            self.register_parameter(name + ("_rev" if reverse else ""), nn.Parameter(value))

    def _get(self, reverse: bool, *names: str):
        return tuple(getattr(self, name + ("_rev" if reverse else "")) for name in names)

    def discretised(self, reverse: bool):
        """(lambda (N,) complex, B_re (N, H), B_im (N, H)) of one direction."""
        raise NotImplementedError

    def forward(self, u: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = None
        for reverse in _directions(self.bidirectional):
            lam, b_re, b_im = self.discretised(reverse)
            C_re, C_im = self._get(reverse, "C_re", "C_im")
            D = None if reverse else self.D
            out, _ = torch.ops.torch_lru.diag_recurrence(u, lam, b_re, b_im, C_re, C_im, D, None, mask, reverse)
            y = out if y is None else y + out
        return y


def _ring(d_model, d_state, r_min, r_max, max_phase):
    """nu_log, theta_log, B_re, B_im as the LRU draws them (its gamma, C and D are not used)."""
    nu_log, theta_log, _, b_re, b_im, *_ = ops.lru_init(d_model, d_state, r_min, r_max, max_phase)
    return nu_log, theta_log, b_re, b_im


class DiagComplex(_DiagonalLayer):
    """lambda = lam_re + i lam_im, drawn on the LRU's ring; B ~ N(0, 1/(2H)); no normalisation."""

    def __init__(self, d_model, d_state, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, bidirectional=False):
        super().__init__(d_model, d_state, bidirectional)
        for reverse in _directions(bidirectional):
            nu_log, theta_log, b_re, b_im = _ring(d_model, d_state, r_min, r_max, max_phase)
            lam = eigenvalues(nu_log, theta_log)
            self._register(reverse, lam_re=lam.real.clone(), lam_im=lam.imag.clone(), B_re=b_re, B_im=b_im)

    def discretised(self, reverse):
        lam_re, lam_im, b_re, b_im = self._get(reverse, "lam_re", "lam_im", "B_re", "B_im")
        return torch.complex(lam_re, lam_im), b_re, b_im


class DiagExp(_DiagonalLayer):
    """The exponential parameterisation of lambda (stable by construction), still no gamma."""

    def __init__(self, d_model, d_state, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, bidirectional=False):
        super().__init__(d_model, d_state, bidirectional)
        for reverse in _directions(bidirectional):
            nu_log, theta_log, b_re, b_im = _ring(d_model, d_state, r_min, r_max, max_phase)
            self._register(reverse, nu_log=nu_log, theta_log=theta_log, B_re=b_re, B_im=b_im)

    def discretised(self, reverse):
        nu_log, theta_log, b_re, b_im = self._get(reverse, "nu_log", "theta_log", "B_re", "B_im")
        return eigenvalues(nu_log, theta_log), b_re, b_im


def zoh(Lambda: torch.Tensor, log_step: torch.Tensor, B: torch.Tensor):
    """Zero-order hold of x' = Lambda x + B u (Lambda (N,) complex, B (N, H) complex) with steps
    exp(log_step) (N,): returns (lambda, B_bar) = (exp(Delta Lambda), (lambda - 1) / Lambda * B)."""
    step = torch.exp(log_step).to(Lambda.dtype)
    lam = torch.exp(step * Lambda)
    return lam, ((lam - 1) / Lambda).unsqueeze(-1) * B


def hippo_n_eigenvalues(n: int) -> torch.Tensor:
    """n eigenvalues (one of each conjugate pair) of the normal part of HiPPO-LegS of size 2n,
    as S5 initialises Lambda: real parts -1/2."""
    size = 2 * n
    k = torch.arange(size, dtype=torch.float64)
    p = torch.sqrt(k + 0.5)
    # HiPPO-LegS: -sqrt(2i+1) sqrt(2j+1) below the diagonal, -(i+1) on it; plus p p^T = its normal part.
    legs = -torch.tril(torch.sqrt(2 * k + 1)[:, None] * torch.sqrt(2 * k + 1)[None, :], -1) - torch.diag(k + 1)
    eig = torch.linalg.eigvals(legs + p[:, None] * p[None, :])
    eig = eig[eig.imag > 0]
    return eig[torch.argsort(eig.imag)][:n]


class _ZOHLayer(_DiagonalLayer):
    """Lambda = -exp(a_log) + i omega (kept stable), B complex, log steps uniform in log [1e-3, 1e-1]."""

    def __init__(self, d_model, d_state, Lambda, B, bidirectional=False, dt_min=1e-3, dt_max=1e-1):
        super().__init__(d_model, d_state, bidirectional)
        for reverse in _directions(bidirectional):
            log_step = torch.rand(d_state) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            self._register(
                reverse,
                a_log=torch.log(-Lambda.real).float(),
                omega=Lambda.imag.float().clone(),
                log_step=log_step,
                B_re=B.real.float().clone(),
                B_im=B.imag.float().clone(),
            )

    def continuous(self, reverse):
        a_log, omega, b_re, b_im = self._get(reverse, "a_log", "omega", "B_re", "B_im")
        return torch.complex(-torch.exp(a_log), omega), torch.complex(b_re, b_im)

    def discretised(self, reverse):
        Lambda, B = self.continuous(reverse)
        lam, b_bar = zoh(Lambda, *self._get(reverse, "log_step"), B)
        return lam, b_bar.real, b_bar.imag


class S5(_ZOHLayer):
    """S5: HiPPO-N eigenvalues, B ~ complex normal / sqrt(2H) (S5 projects a LeCun-normal B onto
    HiPPO-N's eigenvectors; a complex Gaussian of the same scale is this project's simplification)."""

    def __init__(self, d_model, d_state, bidirectional=False, **_ring):
        b_re, b_im = _complex_normal((d_state, d_model), 1 / math.sqrt(2 * d_model))
        super().__init__(d_model, d_state, hippo_n_eigenvalues(d_state), torch.complex(b_re, b_im), bidirectional)


class S4D(_ZOHLayer):
    """S4D-Lin: Lambda_n = -1/2 + i pi n, B = 1 (scaled by 1/sqrt(H) so that B u keeps unit scale)."""

    def __init__(self, d_model, d_state, bidirectional=False, **_ring):
        n = torch.arange(d_state, dtype=torch.float64)
        Lambda = torch.complex(torch.full_like(n, -0.5), math.pi * n)
        B = torch.ones(d_state, d_model, dtype=torch.complex64) / math.sqrt(d_model)
        super().__init__(d_model, d_state, Lambda, B, bidirectional)


class TanhRNN(nn.Module):
    """torch.nn.RNN (cuDNN on GPU) with a linear read-out and the D skip. Masks must be padding
    at the end of each row (a valid prefix): rows are packed to their lengths."""

    def __init__(self, d_model, d_state, bidirectional=False, **_ring):
        super().__init__()
        self.rnn = nn.RNN(d_model, d_state, nonlinearity="tanh", batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(d_state * (2 if bidirectional else 1), d_model, bias=False)
        self.D = nn.Parameter(torch.randn(d_model))

    def forward(self, u, mask=None):
        if mask is None:
            states, _ = self.rnn(u)
        else:
            lengths = mask.sum(1)
            prefix = torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]
            if not torch.equal(prefix, mask):
                raise ValueError("tanh_rnn: the mask must mark a valid prefix of each row (padding at the end)")
            packed = nn.utils.rnn.pack_padded_sequence(
                u, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
            )
            states, _ = self.rnn(packed)
            states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=u.shape[1])
        return self.out(states) + self.D * u


class LinearDense(nn.Module):
    """x_k = A x_{k-1} + B u_k with a dense real A (Glorot-initialised, as the paper's dense linear
    RNN), y = C x + D u; a loop over time (the scan op covers diagonal recurrences only)."""

    def __init__(self, d_model, d_state, bidirectional=False, **_ring):
        super().__init__()
        self.bidirectional = bidirectional
        for reverse in _directions(bidirectional):
            suffix = "_rev" if reverse else ""
            self.register_parameter("A" + suffix, nn.Parameter(nn.init.xavier_normal_(torch.empty(d_state, d_state))))
            self.register_parameter("B" + suffix, nn.Parameter(torch.randn(d_state, d_model) / math.sqrt(d_model)))
            self.register_parameter("C" + suffix, nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state)))
        self.D = nn.Parameter(torch.randn(d_model))

    def forward(self, u, mask=None):
        u_in = u if mask is None else u.masked_fill(~mask.unsqueeze(-1), 0)
        y = self.D * u
        for reverse in _directions(self.bidirectional):
            s = "_rev" if reverse else ""
            A, B, C = getattr(self, "A" + s), getattr(self, "B" + s), getattr(self, "C" + s)
            bu = F.linear(u_in, B).unbind(1)
            x = torch.zeros(u.shape[0], A.shape[0], dtype=u.dtype, device=u.device)
            states = [None] * len(bu)
            for t in range(len(bu) - 1, -1, -1) if reverse else range(len(bu)):
                x = F.linear(x, A) + bu[t]
                states[t] = x
            y = y + F.linear(torch.stack(states, 1), C) if states else y
        return y


def make_layer(name: str, d_model: int, d_state: int, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, bidirectional=False):
    """The recurrent layer called ``name`` (one of LAYERS)."""
    check_layer(name)
    ring = dict(r_min=r_min, r_max=r_max, max_phase=max_phase)
    if name == "lru":
        return LRU(d_model, d_state, bidirectional=bidirectional, **ring)
    cls = {
        "tanh_rnn": TanhRNN,
        "linear_dense": LinearDense,
        "diag_complex": DiagComplex,
        "diag_exp": DiagExp,
        "s5": S5,
        "s4d": S4D,
    }[name]
    return cls(d_model, d_state, bidirectional=bidirectional, **ring)
