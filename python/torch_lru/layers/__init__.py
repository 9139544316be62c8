"""The recurrent layers a block can hold: the LRU and the layers of the paper's ablation, from a
tanh RNN to the LRU one change at a time, plus two diagonal state-space baselines. All take
``forward(u, mask=None)`` on (B, L, H) real sequences and return (B, L, H).

- ``tanh_rnn``: x_k = tanh(A x_{k-1} + B u_k + b), y_k = C x_k + D u_k.
- ``linear_dense``: x_k = A x_{k-1} + B u_k with a dense real A, y = C x + D u.
- ``diag_complex``: complex diagonal recurrence, lambda's real and imaginary parts the parameters.
- ``diag_exp``: lambda = exp(-exp(nu_log) + i exp(theta_log)), no gamma normalisation.
- ``lru``: the full LRU.
- ``s5``, ``s4d``: x' = Lambda x + B u discretised by zero-order hold with learnable log steps;
  S5 from HiPPO-N's eigenvalues (Smith et al. 2023), S4D from S4D-Lin, Lambda_n = -1/2 + i pi n
  (Gu et al. 2022).
- ``rglru``: the LRU's gated successor, Griffin's RG-LRU in its recurrent block (De et al. 2024):
  a real diagonal recurrence whose coefficient a_t depends on the input, after a short causal
  convolution, gated by a GeLU branch.

Each layer's math is a C++ op (csrc/ops/lru.cpp, csrc/ops/layer_math.cpp, csrc/ops/rglru.cpp) that the C++ layers
(torch_lru/layers.h) call too. Each layer class names its recurrence's parameters in
``recurrence_parameters`` (the optimiser's LRU group). The block and the model are above this
package (torch_lru.modules), never below it.
"""

import math
from dataclasses import dataclass

import torch

from .. import ops  # noqa: F401  (registers torch.ops.torch_lru)
from .dense import LinearDense, TanhRNN
from .diagonal import S4D, S5, DiagComplex, DiagExp, DiagonalLayer, hippo_n_eigenvalues, zoh
from .lru import LRU, eigenvalues
from .rglru import RGLRU

LAYERS = tuple(torch.ops.torch_lru.layer_names())
CLASSES = {
    "tanh_rnn": TanhRNN,
    "linear_dense": LinearDense,
    "diag_complex": DiagComplex,
    "diag_exp": DiagExp,
    "lru": LRU,
    "s5": S5,
    "s4d": S4D,
    "rglru": RGLRU,
}
# What keeps a layer from torch.compile without graph breaks (None: nothing; the layer compiles
# with fullgraph and dynamic shapes, tests/test_train.py checks it).
COMPILE_BLOCKERS = {name: getattr(cls, "compile_blocker", None) for name, cls in CLASSES.items()}
# The layers that read the LRU's ring (r_min, r_max, max_phase); the others start elsewhere.
RING_LAYERS = ("diag_complex", "diag_exp", "lru")


def check_layer(name: str) -> str:
    if name not in LAYERS:
        raise ValueError(f"unknown recurrent layer {name!r}; the layers are {', '.join(LAYERS)}")
    return name


@dataclass
class LayerOptions:
    """What a block's recurrent layer is built from; each layer reads the entries that apply to it."""

    d_model: int
    d_state: int
    layer: str = "lru"
    r_min: float = 0.0
    r_max: float = 1.0
    max_phase: float = 2 * math.pi
    bidirectional: bool = False
    # rglru only: the gates' number of diagonal blocks, and the range of the initial a^c.
    gate_blocks: int = 1
    a_min: float = 0.9
    a_max: float = 0.999

    def __post_init__(self):
        check_layer(self.layer)


def make_layer(options: LayerOptions) -> torch.nn.Module:
    """The recurrent layer ``options.layer``, given the options that apply to it."""
    cls = CLASSES[check_layer(options.layer)]
    kwargs = {"bidirectional": options.bidirectional}
    if options.layer in RING_LAYERS:
        kwargs.update(r_min=options.r_min, r_max=options.r_max, max_phase=options.max_phase)
    if options.layer == "rglru":
        kwargs.update(gate_blocks=options.gate_blocks, a_min=options.a_min, a_max=options.a_max)
    return cls(options.d_model, options.d_state, **kwargs)


__all__ = [
    "CLASSES",
    "COMPILE_BLOCKERS",
    "LAYERS",
    "LRU",
    "RGLRU",
    "S4D",
    "S5",
    "DiagComplex",
    "DiagExp",
    "DiagonalLayer",
    "LayerOptions",
    "LinearDense",
    "TanhRNN",
    "check_layer",
    "eigenvalues",
    "hippo_n_eigenvalues",
    "make_layer",
    "zoh",
]
