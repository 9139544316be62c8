"""The LRU layer as a torch.nn module over the ops that hold its math and initialisation
(``torch_lru::lru`` / ``lru_step`` / ``lru_init``, csrc/ops/lru.cpp), which the C++ module
(torch_lru/layers.h) calls too. Parameter names are the same in both languages, so a
``state_dict`` saved by one loads in the other.
"""

import math
from typing import Optional

import torch
from torch import nn

from .. import ops

# The parameters of one direction, in lru_init's order (D belongs to the forward direction only).
DIRECTION_PARAMETERS = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im", "C_re", "C_im")
REVERSE_SUFFIX = "_rev"


def eigenvalues(nu_log: torch.Tensor, theta_log: torch.Tensor) -> torch.Tensor:
    """The LRU's lambda = exp(-exp(nu_log) + i exp(theta_log)), complex (N,) (torch_lru::eigenvalues)."""
    return torch.ops.torch_lru.eigenvalues(nu_log, theta_log)


class LRU(nn.Module):
    """Linear Recurrent Unit (Orvieto et al., 2023) over real sequences ``u`` of shape (B, L, H).

    ``x_k = lambda * x_{k-1} + exp(gamma_log) * (B u_k)``, ``y_k = Re(C x_k) + D * u_k``, with
    ``lambda = exp(-exp(nu_log) + i exp(theta_log))`` initialised uniformly on the ring
    ``r_min <= |lambda| <= r_max``, phase in ``[0, max_phase)``.

    Parameters: ``nu_log``, ``theta_log``, ``gamma_log`` (N); ``B_re``, ``B_im`` (N, H); ``C_re``,
    ``C_im`` (H, N); ``D`` (H). With ``bidirectional=True`` a second direction, run from the last
    step to the first, has its own ``*_rev`` copies of all but ``D``; the two directions' outputs
    are summed, which is one linear read-out of the concatenated states (S5's choice). An extra
    H x 2H mixing layer would add parameters the block's GLU already provides.
    """

    # The recurrence's own parameters (the optimiser gives them their own learning rate).
    recurrence_parameters = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im")

    def __init__(
        self,
        d_model: int,
        d_state: int,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 2 * math.pi,
        bidirectional: bool = False,
        *,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.d_model, self.d_state = d_model, d_state
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        self.bidirectional = bidirectional
        for suffix in self._suffixes():
            drawn = self._draw(device, dtype)
            for name, value in zip(DIRECTION_PARAMETERS, drawn):
                self.register_parameter(name + suffix, nn.Parameter(value))
            if suffix == "":
                self.D = nn.Parameter(drawn[-1])

    def _suffixes(self) -> tuple[str, ...]:
        return ("", REVERSE_SUFFIX) if self.bidirectional else ("",)

    def _draw(self, device, dtype) -> list[torch.Tensor]:
        return ops.lru_init(
            self.d_model, self.d_state, self.r_min, self.r_max, self.max_phase, dtype=dtype, device=device
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Redraws every parameter (forward direction first, then the reverse one)."""
        for suffix in self._suffixes():
            drawn = self._draw(self.nu_log.device, self.nu_log.dtype)
            for name, value in zip(DIRECTION_PARAMETERS, drawn):
                getattr(self, name + suffix).copy_(value)
            if suffix == "":
                self.D.copy_(drawn[-1])

    def direction_parameters(self, reverse: bool = False) -> tuple[torch.Tensor, ...]:
        suffix = REVERSE_SUFFIX if reverse else ""
        return tuple(getattr(self, name + suffix) for name in DIRECTION_PARAMETERS)

    def eigenvalues(self, reverse: bool = False) -> torch.Tensor:
        """lambda (N,), complex."""
        return eigenvalues(*self.direction_parameters(reverse)[:2])

    def forward(
        self,
        u: torch.Tensor,
        state: Optional[torch.Tensor] = None,
        return_state: bool = False,
        mask: Optional[torch.Tensor] = None,
    ):
        """``u`` (B, L, H) -> ``y`` (B, L, H), or ``(y, final_state)`` with ``return_state``.

        ``state``: complex (B, N) state before the first step (zero when None); with the final
        state of one call passed to the next, a long sequence processed in pieces gives the same
        outputs as one pass. ``mask`` (B, L) bool, true at valid positions: padding never changes
        an output at a valid position; the final state is the one after the last valid step.
        """
        if self.bidirectional and (state is not None or return_state):
            raise ValueError("LRU: a bidirectional layer sees the whole sequence; it takes and returns no state")
        y, final_state = ops.lru(u, self.direction_parameters(), self.D, state, mask)
        if self.bidirectional:
            y = y + ops.lru(u, self.direction_parameters(reverse=True), None, None, mask, reverse=True)[0]
        return (y, final_state) if return_state else y

    def init_state(self, batch: int) -> torch.Tensor:
        """The zero state (batch, N), complex."""
        return torch.zeros(batch, self.d_state, dtype=self.nu_log.dtype.to_complex(), device=self.nu_log.device)

    def step_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(lam, W_in, W_out)`` for :func:`torch_lru.ops.lru_step_packed` (torch_lru::lru_step_weights).
        Without autograd they are packed once and kept until a parameter changes (its storage or
        version), so a stream of steps does not repack them per token."""
        params = self.direction_parameters()
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return torch.ops.torch_lru.lru_step_weights(*params)
        key = tuple((p.data_ptr(), p._version) for p in params)
        if getattr(self, "_packed_key", None) != key:
            self._packed = torch.ops.torch_lru.lru_step_weights(*params)
            self._packed_key = key
        return self._packed

    def step(self, u_t: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``u_t`` (B, H) -> ``(y_t, new_state)``; ``state`` None means zeros."""
        if self.bidirectional:
            raise ValueError("LRU: a bidirectional layer cannot run step by step (its reverse half needs the future)")
        return torch.ops.torch_lru.lru_step_packed(u_t, *self.step_weights(), self.D, state)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, r_min={self.r_min}, r_max={self.r_max}, "
            f"max_phase={self.max_phase:.4g}, bidirectional={self.bidirectional}"
        )
