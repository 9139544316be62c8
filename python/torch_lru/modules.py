"""The LRU layer, its residual block and the deep model, as torch.nn modules.

The layer's math and initialisation are the C++ ops ``torch_lru::lru`` / ``lru_step`` /
``lru_init`` (csrc/ops/lru.cpp), which the C++ modules (csrc/include/torch_lru/modules.h) call too.
Parameter and buffer names are the same in both languages, so a ``state_dict`` saved by one loads
in the other (see docs/design.md, "Checkpoints").
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import ops

# The parameters of one direction, in lru_init's order (D belongs to the forward direction only).
DIRECTION_PARAMETERS = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im", "C_re", "C_im")
REVERSE_SUFFIX = "_rev"
NORM_KINDS = ("batch", "layer")
POOLINGS = ("mean", "last")


def eigenvalues(nu_log: torch.Tensor, theta_log: torch.Tensor) -> torch.Tensor:
    """The LRU's lambda = exp(-exp(nu_log) + i exp(theta_log)), complex (N,)."""
    return torch.polar(torch.exp(-torch.exp(nu_log)), torch.exp(theta_log))


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

    def step(self, u_t: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``u_t`` (B, H) -> ``(y_t, new_state)``; ``state`` None means zeros."""
        if self.bidirectional:
            raise ValueError("LRU: a bidirectional layer cannot run step by step (its reverse half needs the future)")
        return ops.lru_step(u_t, self.direction_parameters(), self.D, state)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, r_min={self.r_min}, r_max={self.r_max}, "
            f"max_phase={self.max_phase:.4g}, bidirectional={self.bidirectional}"
        )


class SequenceNorm(nn.Module):
    """BatchNorm or LayerNorm over the features of (B, L, H) sequences, aware of padding.

    Batch statistics are taken over the valid positions only (``mask`` true), so padding changes
    neither the outputs at valid positions nor the running statistics. Buffers are named as
    ``nn.BatchNorm1d``'s.
    """

    def __init__(self, d_model: int, kind: str = "batch", eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if kind not in NORM_KINDS:
            raise ValueError(f"SequenceNorm: kind must be one of {NORM_KINDS}, got {kind!r}")
        self.d_model, self.kind, self.eps, self.momentum = d_model, kind, eps, momentum
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
        if kind == "batch":
            self.register_buffer("running_mean", torch.zeros(d_model))
            self.register_buffer("running_var", torch.ones(d_model))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"SequenceNorm: expected (B, L, {self.d_model}), got {tuple(x.shape)}")
        if self.kind == "layer":
            return F.layer_norm(x, (self.d_model,), self.weight, self.bias, self.eps)
        if self.training:
            self.num_batches_tracked.add_(1)
        if mask is None or not self.training:
            flat = x.reshape(-1, self.d_model)
            y = F.batch_norm(
                flat,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                self.training,
                self.momentum,
                self.eps,
            )
            return y.view(x.shape)
        valid = mask.unsqueeze(-1).to(x.dtype)
        count = valid.sum().clamp_min(1)
        mean = (x * valid).sum((0, 1)) / count
        var = ((x - mean) * valid).square().sum((0, 1)) / count
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / (count - 1).clamp_min(1), self.momentum)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class LRUBlock(nn.Module):
    """[pre-norm] -> LRU -> GELU -> dropout -> GLU -> dropout -> residual add -> [post-norm].

    ``layer`` swaps the LRU for another recurrent layer of torch_lru.variants (the paper's
    ablation); everything around it stays the same. The LRU is the submodule ``lru``, any other
    layer ``rnn``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 2 * math.pi,
        bidirectional: bool = False,
        norm: str = "batch",
        prenorm: bool = True,
        dropout: float = 0.0,
        layer: str = "lru",
    ):
        super().__init__()
        from .variants import check_layer, make_layer

        self.prenorm, self.layer = prenorm, check_layer(layer)
        self.norm = SequenceNorm(d_model, norm)
        if layer == "lru":
            self.lru = LRU(d_model, d_state, r_min, r_max, max_phase, bidirectional)
        else:
            self.rnn = make_layer(layer, d_model, d_state, r_min, r_max, max_phase, bidirectional)
        # GLU: value and gate from one H -> 2H product (first half value, second half gate).
        self.glu = nn.Linear(d_model, 2 * d_model)
        self.dropout = nn.Dropout(dropout)

    def _mix(self, z: torch.Tensor) -> torch.Tensor:
        z = self.dropout(F.gelu(z))
        return self.dropout(F.glu(self.glu(z), dim=-1))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        z = self.norm(x, mask) if self.prenorm else x
        x = x + self._mix((self.lru if self.layer == "lru" else self.rnn)(z, mask=mask))
        return x if self.prenorm else self.norm(x, mask)

    def step(self, x_t: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``x_t`` (B, H) -> ``(y_t, new_state)`` (norms use their running statistics)."""
        if self.layer != "lru":
            raise ValueError(f"LRUBlock.step: only the LRU steps token by token, this block's layer is {self.layer!r}")
        if self.training and self.norm.kind == "batch":
            raise ValueError("LRUBlock.step: BatchNorm needs running statistics; call .eval() first")
        norm = lambda t: self.norm(t.unsqueeze(1)).squeeze(1)  # noqa: E731
        z = norm(x_t) if self.prenorm else x_t
        y, state = self.lru.step(z, state)
        x_t = x_t + self._mix(y)
        return (x_t if self.prenorm else norm(x_t)), state


class RetrievalHead(nn.Module):
    """Two pooled encodings a, b -> [a, b, a * b, a - b] -> Linear -> GELU -> Linear."""

    def __init__(self, d_model: int, d_output: int):
        super().__init__()
        self.hidden = nn.Linear(4 * d_model, d_model)
        self.out = nn.Linear(d_model, d_output)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.hidden(torch.cat([a, b, a * b, a - b], dim=-1))))


def pool(x: torch.Tensor, mask: Optional[torch.Tensor], how: str) -> torch.Tensor:
    """(B, L, H) -> (B, H): mean over the valid positions, or the last valid position."""
    if how == "mean":
        if mask is None:
            return x.mean(1)
        valid = mask.unsqueeze(-1).to(x.dtype)
        return (x * valid).sum(1) / valid.sum(1).clamp_min(1)
    if mask is None:
        return x[:, -1]
    last = (mask.long().cumsum(1) - 1).where(mask, -1).amax(1).clamp_min(0)
    return x.gather(1, last.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)


class LRUModel(nn.Module):
    """Encoder -> ``n_layers`` LRUBlocks -> pooling -> decoder, for sequence classification.

    The encoder is an embedding when ``vocab_size`` is given (inputs (B, L) token ids), else a linear
    map from ``d_input`` features (inputs (B, L, d_input)). With ``dual=True`` (LRA Retrieval) the
    model takes two sequences, encodes both with the same blocks and classifies the pair with a
    :class:`RetrievalHead`. ``layer`` chooses the blocks' recurrent layer (torch_lru.variants.LAYERS).
    """

    def __init__(
        self,
        d_output: int,
        d_model: int = 128,
        d_state: int = 256,
        n_layers: int = 6,
        vocab_size: Optional[int] = None,
        d_input: int = 1,
        pooling: str = "mean",
        dual: bool = False,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 2 * math.pi,
        bidirectional: bool = False,
        norm: str = "batch",
        prenorm: bool = True,
        dropout: float = 0.0,
        layer: str = "lru",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"LRUModel: pooling must be one of {POOLINGS}, got {pooling!r}")
        sizes = {"d_output": d_output, "d_model": d_model, "d_state": d_state, "n_layers": n_layers, "d_input": d_input}
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LRUModel: {name} must be a positive integer, got {value!r}")
        if vocab_size is not None and (
            isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1
        ):
            raise ValueError(
                f"LRUModel: vocab_size must be a positive integer (or None for features), got {vocab_size!r}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"LRUModel: dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.d_input, self.pooling, self.dual = vocab_size, d_input, pooling, dual
        self.encoder = nn.Embedding(vocab_size, d_model) if vocab_size is not None else nn.Linear(d_input, d_model)
        self.blocks = nn.ModuleList(
            LRUBlock(d_model, d_state, r_min, r_max, max_phase, bidirectional, norm, prenorm, dropout, layer)
            for _ in range(n_layers)
        )
        self.decoder = RetrievalHead(d_model, d_output) if dual else nn.Linear(d_model, d_output)

    def _check(self, x: torch.Tensor, mask: Optional[torch.Tensor], name: str) -> None:
        if self.vocab_size is not None:
            ok = x.dim() == 2 and not x.is_floating_point() and not x.is_complex()
            expected = "token ids (B, L)"
            # An id out of range would index past the embedding (on a GPU, a device-side assert).
            if ok and x.numel() and not torch.compiler.is_compiling():
                low, high = x.aminmax()
                if low < 0 or high >= self.vocab_size:
                    raise ValueError(
                        f"LRUModel: {name} holds token ids in [{int(low)}, {int(high)}], outside "
                        f"[0, vocab_size = {self.vocab_size})"
                    )
        else:
            ok = x.dim() == 3 and x.shape[-1] == self.d_input
            expected = f"features (B, L, {self.d_input})"
        if not ok:
            raise ValueError(f"LRUModel: {name} must be {expected}, got {tuple(x.shape)} {x.dtype}")
        if mask is not None and (mask.dtype != torch.bool or mask.shape != x.shape[:2]):
            raise ValueError(
                f"LRUModel: the mask of {name} must be bool {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
            )

    def encode(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Inputs -> pooled features (B, d_model)."""
        self._check(x, mask, "x")
        z = self.encoder(x)
        for block in self.blocks:
            z = block(z, mask)
        return pool(z, mask, self.pooling)

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        x2: Optional[torch.Tensor] = None,
        mask2: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Logits (B, d_output). ``mask`` (B, L) bool marks valid positions; ``x2``/``mask2`` are the
        second sequence of a dual model (padded to ``x``'s length: the pair is encoded as one batch)."""
        if not self.dual:
            if x2 is not None:
                raise ValueError("LRUModel: x2 given to a model built with dual=False")
            return self.decoder(self.encode(x, mask))
        if x2 is None:
            raise ValueError("LRUModel: a dual model takes two sequences (x2 is missing)")
        self._check(x2, mask2, "x2")
        if x2.shape != x.shape or (mask is None) != (mask2 is None):
            raise ValueError(
                f"LRUModel: the two sequences must have one shape, got {tuple(x.shape)} and {tuple(x2.shape)}"
            )
        both = self.encode(torch.cat([x, x2]), None if mask is None else torch.cat([mask, mask2]))
        a, b = both.chunk(2)
        return self.decoder(a, b)
