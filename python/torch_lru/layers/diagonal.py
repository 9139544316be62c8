"""The ablation's diagonal layers (diag_complex, diag_exp, s5, s4d) as thin torch.nn modules: their
initialisation, discretisation and recurrence are the C++ ops ``torch_lru::layer_init``,
``diagonal_discretise`` and ``diagonal_forward`` (csrc/ops/layer_math.cpp), which the C++ layers
(torch_lru/layers.h) call too, so one seed gives the same parameters in both languages.
"""

import math
from typing import Optional

import torch
from torch import nn


def directions(bidirectional: bool) -> tuple:
    return (False, True) if bidirectional else (False,)


def refuse_bidirectional_step(bidirectional: bool, name: str) -> None:
    if bidirectional:
        raise ValueError(f"{name}: a bidirectional layer cannot run step by step (its reverse half needs the future)")


def register_drawn(
    module: nn.Module,
    layer: str,
    d_model: int,
    d_state: int,
    r_min: float,
    r_max: float,
    max_phase: float,
    bidirectional: bool,
) -> None:
    """Registers the parameters torch_lru::layer_init draws for ``layer``, under their names."""
    names = torch.ops.torch_lru.layer_parameter_names(layer, bidirectional)
    values = torch.ops.torch_lru.layer_init(layer, d_model, d_state, r_min, r_max, max_phase, bidirectional)
    for name, value in zip(names, values):
        module.register_parameter(name, nn.Parameter(value))


class DiagonalLayer(nn.Module):
    """A diagonal recurrence x_k = lambda x_{k-1} + B u_k, y_k = Re(C x_k) + D u_k, with lambda and B
    from the layer's parameterisation (``kind``); parameters of the reverse direction carry the
    suffix ``_rev``."""

    kind = ""  # set by each subclass
    # The recurrence's own parameters (the optimiser gives them the LRU's learning rate): all but C, D.
    recurrence_parameters: tuple = ()

    def __init__(
        self,
        d_model: int,
        d_state: int,
        bidirectional: bool = False,
        *,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 2 * math.pi,
    ):
        super().__init__()
        self.d_model, self.d_state, self.bidirectional = d_model, d_state, bidirectional
        register_drawn(self, self.kind, d_model, d_state, r_min, r_max, max_phase, bidirectional)
        # Asked once: an op that returns strings, called in forward, would break torch.compile's graph.
        self._direction_names = tuple(torch.ops.torch_lru.diagonal_direction_names(self.kind))

    def _direction(self, reverse: bool) -> list:
        suffix = "_rev" if reverse else ""
        return [getattr(self, name + suffix) for name in self._direction_names]

    def discretised(self, reverse: bool = False):
        """(lambda (N,) complex, B_re (N, H), B_im (N, H)) of one direction."""
        return torch.ops.torch_lru.diagonal_discretise(self.kind, self._direction(reverse))

    def forward(self, u: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = None
        for reverse in directions(self.bidirectional):
            suffix = "_rev" if reverse else ""
            C_re, C_im = getattr(self, "C_re" + suffix), getattr(self, "C_im" + suffix)
            out = torch.ops.torch_lru.diagonal_forward(
                u, self.kind, self._direction(reverse), C_re, C_im, None if reverse else self.D, mask, reverse
            )
            y = out if y is None else y + out
        return y

    def init_state(self, batch: int) -> torch.Tensor:
        """The zero state (batch, N), complex."""
        return torch.zeros(batch, self.d_state, dtype=self.C_re.dtype.to_complex(), device=self.C_re.device)

    def step(self, u_t: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``u_t`` (B, H) -> ``(y_t, new_state)``; ``state`` (B, N) complex, None means zeros."""
        refuse_bidirectional_step(self.bidirectional, type(self).__name__)
        return torch.ops.torch_lru.diagonal_step(
            u_t, self.kind, self._direction(False), self.C_re, self.C_im, self.D, state
        )

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.d_state}, bidirectional={self.bidirectional}"


class DiagComplex(DiagonalLayer):
    """lambda = lam_re + i lam_im, drawn on the LRU's ring; B as the LRU's; no normalisation."""

    kind = "diag_complex"
    recurrence_parameters = ("lam_re", "lam_im", "B_re", "B_im")

    def __init__(self, d_model, d_state, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, bidirectional=False):
        super().__init__(d_model, d_state, bidirectional, r_min=r_min, r_max=r_max, max_phase=max_phase)


class DiagExp(DiagonalLayer):
    """The exponential parameterisation of lambda (stable by construction), still no gamma."""

    kind = "diag_exp"
    recurrence_parameters = ("nu_log", "theta_log", "B_re", "B_im")

    def __init__(self, d_model, d_state, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, bidirectional=False):
        super().__init__(d_model, d_state, bidirectional, r_min=r_min, r_max=r_max, max_phase=max_phase)


class S5(DiagonalLayer):
    """S5: Lambda from HiPPO-N's eigenvalues, B ~ complex N(0, 1/(2H)) (S5 projects a LeCun-normal B
    onto HiPPO-N's eigenvectors; a complex Gaussian of the same scale is this project's
    simplification), zero-order hold with learnable log steps."""

    kind = "s5"
    recurrence_parameters = ("a_log", "omega", "log_step", "B_re", "B_im")

    def __init__(self, d_model, d_state, bidirectional=False):
        super().__init__(d_model, d_state, bidirectional)


class S4D(DiagonalLayer):
    """S4D-Lin: Lambda_n = -1/2 + i pi n, B = 1/sqrt(H), zero-order hold with learnable log steps."""

    kind = "s4d"
    recurrence_parameters = ("a_log", "omega", "log_step", "B_re", "B_im")

    def __init__(self, d_model, d_state, bidirectional=False):
        super().__init__(d_model, d_state, bidirectional)


def zoh(Lambda: torch.Tensor, log_step: torch.Tensor, B: torch.Tensor):
    """Zero-order hold of x' = Lambda x + B u: (exp(Delta Lambda), (lambda - 1) / Lambda * B) with
    Delta = exp(log_step) (torch_lru::zoh)."""
    return torch.ops.torch_lru.zoh(Lambda, log_step, B)


def hippo_n_eigenvalues(n: int) -> torch.Tensor:
    """The n eigenvalues with positive imaginary part of HiPPO-LegS's normal part (size 2n): S5's
    initial Lambda (torch_lru::hippo_n_eigenvalues)."""
    return torch.ops.torch_lru.hippo_n_eigenvalues(n)
