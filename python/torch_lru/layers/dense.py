"""The ablation's two non-diagonal layers as thin torch.nn modules over the C++ ops that hold their
math (csrc/ops/layer_math.cpp), which the C++ layers (torch_lru/layers.h) call too.

- ``tanh_rnn``: x_k = tanh(W_ih u_k + b_ih + W_hh x_{k-1} + b_hh) (torch's RNN, cuDNN on a GPU),
  y_k = W_out x_k + D u_k (``torch_lru::tanh_rnn``).
- ``linear_dense``: x_k = A x_{k-1} + B u_k with a dense real A, y_k = C x_k + D u_k, a loop over
  time (``torch_lru::dense_recurrence``; the scan op covers diagonal recurrences only).
"""

from typing import Optional

import torch
from torch import nn

from .diagonal import directions, refuse_bidirectional_step, register_drawn


class TanhRNN(nn.Module):
    """torch.nn.RNN's parameters (submodule ``rnn``), a bias-free read-out ``out`` and the D skip.
    Masks must be padding at the end of each row (a valid prefix): rows are packed to their lengths."""

    recurrence_parameters = ()
    compile_blocker = "dynamo does not trace torch.nn.RNN modules"  # what keeps torch.compile off it

    def __init__(self, d_model: int, d_state: int, bidirectional: bool = False):
        super().__init__()
        self.rnn = nn.RNN(d_model, d_state, nonlinearity="tanh", batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(d_state * (2 if bidirectional else 1), d_model, bias=False)
        self.D = nn.Parameter(torch.randn(d_model))

    def forward(self, u: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        weights = [w for layer in self.rnn.all_weights for w in layer]
        return torch.ops.torch_lru.tanh_rnn(
            u, mask, weights, self.rnn.bidirectional, self.training, self.out.weight, self.D
        )

    def init_state(self, batch: int) -> torch.Tensor:
        return self.D.new_zeros(batch, self.rnn.hidden_size)

    def step(self, u_t: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``u_t`` (B, H) -> ``(y_t, new_state)``, the state (B, N) real."""
        refuse_bidirectional_step(self.rnn.bidirectional, "TanhRNN")
        return torch.ops.torch_lru.tanh_rnn_step(u_t, list(self.rnn.all_weights[0]), self.out.weight, self.D, state)


class LinearDense(nn.Module):
    """A dense linear RNN: A Glorot-normal (the paper's dense linear RNN), B ~ N(0, 1/H), C ~ N(0, 1/N)."""

    recurrence_parameters = ()
    compile_blocker = "its recurrence loops over L inside a composite op, which specialises on every length"

    def __init__(self, d_model: int, d_state: int, bidirectional: bool = False):
        super().__init__()
        self.bidirectional = bidirectional
        register_drawn(self, "linear_dense", d_model, d_state, 0.0, 1.0, 1.0, bidirectional)

    def forward(self, u: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        y = self.D * u
        for reverse in directions(self.bidirectional):
            s = "_rev" if reverse else ""
            A, B, C = getattr(self, "A" + s), getattr(self, "B" + s), getattr(self, "C" + s)
            y = y + torch.ops.torch_lru.dense_recurrence(u, A, B, C, mask, reverse)
        return y

    def init_state(self, batch: int) -> torch.Tensor:
        return self.A.new_zeros(batch, self.A.shape[0])

    def step(self, u_t: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``u_t`` (B, H) -> ``(y_t, new_state)``, the state (B, N) real."""
        refuse_bidirectional_step(self.bidirectional, "LinearDense")
        return torch.ops.torch_lru.dense_step(u_t, self.A, self.B, self.C, self.D, state)
