"""The RG-LRU of Griffin and Hawk (De et al., 2024) in its recurrent block, as a thin torch.nn module
over the ops that hold its math and initialisation (``torch_lru::rglru`` / ``rglru_step`` /
``rglru_init``, csrc/ops/rglru.cpp; equations in csrc/include/torch_lru/rglru.h), which the C++
layer (torch_lru/layers.h) calls too: the same parameter names, the same draws for one seed.
"""

from typing import Optional

import torch
from torch import nn

C = 8.0  # the paper's c in a_t = a^(c r_t)
CONV_WIDTH = 4  # the paper's temporal convolution width


class RGLRU(nn.Module):
    """Griffin's recurrent block around the Real-Gated Linear Recurrent Unit, over (B, L, H) inputs:

    ``y = W_out (GeLU(W_in_gate u + b_in_gate) * RG-LRU(Conv1D(W_in_x u + b_in_x))) + b_out``

    of width ``d_state`` inside (the paper's D_RNN), with a causal depthwise Conv1D of width 4 and
    the RG-LRU ``h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t)``, ``a_t = sigmoid(Lambda)^(c r_t)``,
    gates ``r_t, i_t`` from block-diagonal maps of ``gate_blocks`` blocks (dense when 1). Lambda starts
    with ``a^c`` uniform in ``[a_min, a_max]``. With ``bidirectional=True`` a second Conv1D and
    RG-LRU (parameters ``*_rev``) run from the last step to the first and are added before the gate.

    The state of a unidirectional layer is one (B, 4, d_state) tensor: the convolution's last three
    inputs (oldest first), then h. The exact GeLU is used, as in the rest of torch_lru's blocks.
    """

    # The recurrence's own parameters (the optimiser gives them the LRU group's learning rate).
    recurrence_parameters = ("Lambda", "W_a", "b_a", "W_x", "b_x")

    def __init__(
        self,
        d_model: int,
        d_state: int,
        bidirectional: bool = False,
        *,
        gate_blocks: int = 1,
        a_min: float = 0.9,
        a_max: float = 0.999,
    ):
        super().__init__()
        self.d_model, self.d_state, self.bidirectional = d_model, d_state, bidirectional
        self.gate_blocks, self.a_min, self.a_max = gate_blocks, a_min, a_max
        self._names = tuple(torch.ops.torch_lru.rglru_parameter_names(bidirectional))
        for name, value in zip(self._names, self._draw()):
            self.register_parameter(name, nn.Parameter(value))

    def _draw(self, device=None, dtype=None) -> list:
        return torch.ops.torch_lru.rglru_init(
            self.d_model,
            self.d_state,
            self.gate_blocks,
            self.a_min,
            self.a_max,
            self.bidirectional,
            dtype=dtype,
            device=device,
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Redraws every parameter."""
        for name, value in zip(self._names, self._draw(self.Lambda.device, self.Lambda.dtype)):
            getattr(self, name).copy_(value)

    def _params(self) -> list:
        return [getattr(self, name) for name in self._names]

    def init_state(self, batch: int) -> torch.Tensor:
        """The zero state (batch, 4, d_state) in the parameters' dtype and device."""
        return self.Lambda.new_zeros(batch, CONV_WIDTH, self.d_state)

    def forward(
        self,
        u: torch.Tensor,
        state: Optional[torch.Tensor] = None,
        return_state: bool = False,
        mask: Optional[torch.Tensor] = None,
    ):
        """``u`` (B, L, H) -> ``y`` (B, L, H), or ``(y, final_state)`` with ``return_state``.

        ``state`` (B, 4, d_state) before the first step (zeros when None); passing one call's final
        state to the next continues the sequence. ``mask`` (B, L) bool, true at valid positions: a
        padded step leaves the RG-LRU's state as it was and feeds the convolution a zero, so padding
        never changes an output at a valid position; the final state is the one after the last
        valid step.
        """
        if self.bidirectional and (state is not None or return_state):
            raise ValueError("RGLRU: a bidirectional layer sees the whole sequence; it takes and returns no state")
        y, final_state = torch.ops.torch_lru.rglru(u, self._params(), self.bidirectional, C, state, mask)
        return (y, final_state) if return_state else y

    def step(self, u_t: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``u_t`` (B, H) -> ``(y_t, new_state)``; ``state`` None means zeros."""
        if self.bidirectional:
            raise ValueError("RGLRU: a bidirectional layer cannot run step by step (its reverse half needs the future)")
        return torch.ops.torch_lru.rglru_step(u_t, self._params(), C, state)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, gate_blocks={self.gate_blocks}, a_min={self.a_min}, "
            f"a_max={self.a_max}, bidirectional={self.bidirectional}"
        )
