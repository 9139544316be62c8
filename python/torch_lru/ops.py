"""Python entry points of the torch_lru ops (the kernels and autograd live in C++)."""

import math
from collections.abc import Sequence
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
        out: optional contiguous tensor of ``x``'s shape, dtype and device to write ``h`` into. It
            may be ``x`` itself (an in-place scan) but must share no other memory with ``x``, ``lam``
            or ``h0`` (a RuntimeError says which). Not differentiable. Under ``torch.compile`` it is
            traced as the functional scan followed by a copy into ``out``.

    All tensors share one dtype and device; any strides are accepted. Returns ``h`` of shape
    ``(B, L, N)``, contiguous. Differentiable with respect to ``lam``, ``x`` and ``h0`` (gradients
    in PyTorch's conjugate-Wirtinger convention), traceable by ``torch.compile`` and ``torch.export``.
    """
    if out is not None:
        if torch.compiler.is_compiling():
            # Functionalisation cannot trace a custom op that returns an alias of its input; the
            # functional op and a copy are the same computation, and the copy may fuse.
            inputs = (lam, x) if h0 is None else (lam, x, h0)
            if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
                raise RuntimeError("torch_lru::scan.out: out= does not support automatic differentiation")
            if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device or not out.is_contiguous():
                raise RuntimeError(
                    f"torch_lru::scan.out: out must be contiguous with x's shape {tuple(x.shape)}, dtype {x.dtype} "
                    f"and device {x.device}, got {tuple(out.shape)} {out.dtype} on {out.device}"
                )
            return out.copy_(torch.ops.torch_lru.scan(lam, x, h0, reverse))
        return torch.ops.torch_lru.scan.out(lam, x, h0, reverse, out=out)
    return torch.ops.torch_lru.scan(lam, x, h0, reverse)


def lru_init(
    d_model: int,
    d_state: int,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    *,
    dtype: Optional[torch.dtype] = None,
    device: Optional[torch.device] = None,
    generator: Optional[torch.Generator] = None,
) -> list[torch.Tensor]:
    """Fresh LRU parameters ``[nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im, D]``.

    The paper's initialisation: lambda uniform on the ring ``r_min <= |lambda| <= r_max`` with phase
    in ``[0, max_phase)``, ``gamma_log = log sqrt(1 - |lambda|^2)``, ``B ~ N(0, 1)/sqrt(2 d_model)``,
    ``C ~ N(0, 1)/sqrt(d_state)``, ``D ~ N(0, 1)``. One implementation (C++) serves the Python and
    the C++ modules: with the same seed both draw the same parameters.
    """
    return torch.ops.torch_lru.lru_init(
        d_model, d_state, r_min, r_max, max_phase, dtype=dtype, device=device, generator=generator
    )


def lru(
    u: torch.Tensor,
    params: Sequence[torch.Tensor],
    D: Optional[torch.Tensor],
    state: Optional[torch.Tensor] = None,
    mask: Optional[torch.Tensor] = None,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LRU layer over ``u`` (B, L, H): returns ``(y, final_state)``.

    ``params`` are ``(nu_log, theta_log, gamma_log, B_re, B_im, C_re, C_im)``; ``D`` (H) or None;
    ``state`` the complex (B, N) state before the first step; ``mask`` (B, L) bool, true at valid
    positions (padding then never changes a valid output); ``reverse`` runs from the last step.
    ``final_state`` is the state after the last valid step taken. See ``csrc/include/torch_lru/lru.h``.
    """
    return torch.ops.torch_lru.lru(u, *params, D, state, mask, reverse)


def lru_step(
    u_t: torch.Tensor,
    params: Sequence[torch.Tensor],
    D: Optional[torch.Tensor],
    state: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the LRU for ``u_t`` (B, H): returns ``(y_t, new_state)``."""
    return torch.ops.torch_lru.lru_step(u_t, *params, D, state)
