"""The residual block and the deep model, as torch.nn modules, above the recurrent layers of
torch_lru.layers (the LRU and the ablation's layers). The C++ modules (torch_lru/modules.h) mirror
them: parameter and buffer names are the same in both languages, so a ``state_dict`` saved by one
loads in the other (see docs/design.md, "Checkpoints").

Options nest as the modules do: a model holds its blocks' :class:`BlockOptions`, which hold their
layer's :class:`~torch_lru.layers.LayerOptions`.
"""

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LRU, LayerOptions, eigenvalues, make_layer  # noqa: F401  (LRU, eigenvalues: re-exported)
from .layers.lru import DIRECTION_PARAMETERS, REVERSE_SUFFIX  # noqa: F401  (re-exported)

NORM_KINDS = ("batch", "layer")
POOLINGS = ("mean", "last")


@dataclass
class BlockOptions:
    """An LRUBlock: its recurrent layer's options, the norm, where it sits, and the dropout."""

    layer: LayerOptions
    norm: str = "batch"
    prenorm: bool = True
    dropout: float = 0.0

    @classmethod
    def from_flat(
        cls,
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
    ) -> "BlockOptions":
        """The nested options from the flat arguments LRUModel (and LRUBlock, formerly) take."""
        return cls(
            LayerOptions(d_model, d_state, layer, r_min, r_max, max_phase, bidirectional), norm, prenorm, dropout
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
        # The statistics in the buffers' precision: under bf16 autocast x arrives in bf16, which the
        # float buffers cannot be updated from (and sums over B*L would lose digits in).
        x = x.to(self.running_mean.dtype)
        valid = mask.unsqueeze(-1).to(x.dtype)
        count = valid.sum().clamp_min(1)
        mean = (x * valid).sum((0, 1)) / count
        var = ((x - mean) * valid).square().sum((0, 1)) / count
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * count / (count - 1).clamp_min(1), self.momentum)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class LRUBlock(nn.Module):
    """[pre-norm] -> recurrent layer -> GELU -> dropout -> GLU -> dropout -> residual add -> [post-norm].

    ``options.layer.layer`` chooses the recurrent layer (torch_lru.layers.LAYERS; the paper's
    ablation swaps it, everything around it stays the same). The LRU is the submodule ``lru``,
    any other layer ``rnn``. ``LRUBlock(d_model, d_state, r_min=..., ...)`` (the flat arguments of
    earlier versions) still works, with a DeprecationWarning.
    """

    def __init__(self, options, *args, **kwargs):
        super().__init__()
        if not isinstance(options, BlockOptions):
            warnings.warn(
                "LRUBlock(d_model, d_state, ...) is deprecated: pass LRUBlock(BlockOptions(LayerOptions(d_model, "
                "d_state, ...), norm=..., prenorm=..., dropout=...)) or BlockOptions.from_flat(...)",
                DeprecationWarning,
                stacklevel=2,
            )
            options = BlockOptions.from_flat(options, *args, **kwargs)
        elif args or kwargs:
            raise TypeError("LRUBlock(options): the options are a BlockOptions, and nothing else")
        self.options = options
        self.prenorm, self.layer = options.prenorm, options.layer.layer
        self.norm = SequenceNorm(options.layer.d_model, options.norm)
        if self.layer == "lru":
            self.lru = make_layer(options.layer)
        else:
            self.rnn = make_layer(options.layer)
        # GLU: value and gate from one H -> 2H product (first half value, second half gate).
        self.glu = nn.Linear(options.layer.d_model, 2 * options.layer.d_model)
        self.dropout = nn.Dropout(options.dropout)

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
    :class:`RetrievalHead`. ``layer`` chooses the blocks' recurrent layer (torch_lru.layers.LAYERS);
    the block arguments (d_model ... layer) become ``self.block_options``, every block's.
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
        self.block_options = BlockOptions.from_flat(
            d_model, d_state, r_min, r_max, max_phase, bidirectional, norm, prenorm, dropout, layer
        )
        self.blocks = nn.ModuleList(LRUBlock(self.block_options) for _ in range(n_layers))
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
