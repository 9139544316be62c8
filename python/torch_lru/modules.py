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

NORM_KINDS = ("batch", "layer", "rms")
# "none": the per-step outputs (B, L, d_output), for sequence labelling and causal next-token models.
POOLINGS = ("mean", "last", "none")
BLOCKS = ("lru", "hawk")
# Hawk's gated MLP widens the model by this factor (Griffin paper, section 2.2: M = 3).
MLP_EXPANSION = 3


@dataclass
class BlockOptions:
    """A residual block: its kind (``block``: "lru" for :class:`LRUBlock`, "hawk" for
    :class:`HawkBlock`), its recurrent layer's options, the norm, where it sits, and the dropout."""

    layer: LayerOptions
    norm: str = "batch"
    prenorm: bool = True
    dropout: float = 0.0
    block: str = "lru"

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"BlockOptions: block must be one of {BLOCKS}, got {self.block!r}")

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
        block: str = "lru",
        gate_blocks: int = 1,
        a_min: float = 0.9,
        a_max: float = 0.999,
    ) -> "BlockOptions":
        """The nested options from the flat arguments LRUModel (and LRUBlock, formerly) take."""
        layer_options = LayerOptions(
            d_model, d_state, layer, r_min, r_max, max_phase, bidirectional, gate_blocks, a_min, a_max
        )
        return cls(layer_options, norm, prenorm, dropout, block)


class SequenceNorm(nn.Module):
    """BatchNorm, LayerNorm or RMSNorm over the features of (B, L, H) sequences, aware of padding.

    Batch statistics are taken over the valid positions only (``mask`` true), so padding changes
    neither the outputs at valid positions nor the running statistics. Buffers are named as
    ``nn.BatchNorm1d``'s. RMSNorm (Griffin's): ``x / sqrt(mean(x^2) + eps) * weight``, no bias.
    """

    def __init__(self, d_model: int, kind: str = "batch", eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if kind not in NORM_KINDS:
            raise ValueError(f"SequenceNorm: kind must be one of {NORM_KINDS}, got {kind!r}")
        self.d_model, self.kind, self.eps, self.momentum = d_model, kind, eps, momentum
        self.weight = nn.Parameter(torch.ones(d_model))
        if kind != "rms":
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
        if self.kind == "rms":
            return F.rms_norm(x, (self.d_model,), self.weight, self.eps)
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

    def init_state(self, batch: int) -> torch.Tensor:
        """The recurrent layer's zero state for ``batch`` rows."""
        return (self.lru if self.layer == "lru" else self.rnn).init_state(batch)

    def step(self, x_t: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``x_t`` (B, H) -> ``(y_t, new_state)`` (norms use their running statistics)."""
        check_steps(self, "LRUBlock")
        if self.layer == "lru" and not (self.training and self.dropout.p > 0):
            # One op for the whole block (torch_lru::lru_block_step): one dispatch per token and block.
            n = self.norm
            stats = (n.running_mean, n.running_var) if n.kind == "batch" else (None, None)
            return torch.ops.torch_lru.lru_block_step(
                x_t,
                n.kind,
                n.weight,
                getattr(n, "bias", None),
                *stats,
                n.eps,
                self.prenorm,
                *self.lru.step_weights(),
                self.lru.D,
                self.glu.weight,
                self.glu.bias,
                state,
            )
        norm = lambda t: self.norm(t.unsqueeze(1)).squeeze(1)  # noqa: E731
        z = norm(x_t) if self.prenorm else x_t
        y, state = (self.lru if self.layer == "lru" else self.rnn).step(z, state)
        x_t = x_t + self._mix(y)
        return (x_t if self.prenorm else norm(x_t)), state


# Counts parameter and buffer registrations on any module: a cache of packed weights
# (LRUModel._stream_plan) is stale once a parameter it was built from may have been replaced.
_registrations = [0]


def _count_registration(*_):
    _registrations[0] += 1


torch.nn.modules.module.register_module_parameter_registration_hook(_count_registration)
torch.nn.modules.module.register_module_buffer_registration_hook(_count_registration)


def check_steps(block: nn.Module, name: str) -> None:
    norms = [m for m in block.modules() if isinstance(m, SequenceNorm)]
    if block.training and any(m.kind == "batch" for m in norms):
        raise ValueError(f"{name}.step: BatchNorm needs running statistics; call .eval() first")


class HawkBlock(nn.Module):
    """Hawk's residual block (De et al. 2024, section 2.2 and figure 2), around any recurrent layer
    (Hawk's own is ``rglru``):

    ``x = x + dropout(layer(norm(x)))``, then ``x = x + dropout(W_down (GeLU(W_gate z) * W_up z))``
    with ``z = mlp_norm(x)``, a gated MLP of width 3 H. With ``prenorm=False`` each norm follows
    its residual add instead. The paper's norm is RMSNorm (``norm="rms"``); the layer is the
    submodule ``lru`` for the LRU, ``rnn`` for any other.
    """

    def __init__(self, options: BlockOptions):
        super().__init__()
        self.options = options
        self.prenorm, self.layer = options.prenorm, options.layer.layer
        H = options.layer.d_model
        self.norm = SequenceNorm(H, options.norm)
        if self.layer == "lru":
            self.lru = make_layer(options.layer)
        else:
            self.rnn = make_layer(options.layer)
        self.mlp_norm = SequenceNorm(H, options.norm)
        self.mlp_gate = nn.Linear(H, MLP_EXPANSION * H)
        self.mlp_up = nn.Linear(H, MLP_EXPANSION * H)
        self.mlp_down = nn.Linear(MLP_EXPANSION * H, H)
        self.dropout = nn.Dropout(options.dropout)

    def _mlp(self, z: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mlp_down(F.gelu(self.mlp_gate(z)) * self.mlp_up(z)))

    def _residual(self, x, branch, norm):
        return x + branch(norm(x)) if self.prenorm else norm(x + branch(x))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        layer = self.lru if self.layer == "lru" else self.rnn
        x = self._residual(x, lambda z: self.dropout(layer(z, mask=mask)), lambda t: self.norm(t, mask))
        return self._residual(x, self._mlp, lambda t: self.mlp_norm(t, mask))

    def init_state(self, batch: int) -> torch.Tensor:
        """The recurrent layer's zero state for ``batch`` rows."""
        return (self.lru if self.layer == "lru" else self.rnn).init_state(batch)

    def step(self, x_t: torch.Tensor, state: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token ``x_t`` (B, H) -> ``(y_t, new_state)`` (norms use their running statistics)."""
        check_steps(self, "HawkBlock")
        layer = self.lru if self.layer == "lru" else self.rnn
        new_state = []

        def mixing(z):
            y, s = layer.step(z, state)
            new_state.append(s)
            return self.dropout(y)

        x_t = self._residual(x_t, mixing, lambda t: self.norm(t.unsqueeze(1)).squeeze(1))
        x_t = self._residual(x_t, self._mlp, lambda t: self.mlp_norm(t.unsqueeze(1)).squeeze(1))
        return x_t, new_state[0]


def make_block(options: BlockOptions) -> nn.Module:
    return HawkBlock(options) if options.block == "hawk" else LRUBlock(options)


class RetrievalHead(nn.Module):
    """Two pooled encodings a, b -> [a, b, a * b, a - b] -> Linear -> GELU -> Linear."""

    def __init__(self, d_model: int, d_output: int):
        super().__init__()
        self.hidden = nn.Linear(4 * d_model, d_model)
        self.out = nn.Linear(d_model, d_output)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.hidden(torch.cat([a, b, a * b, a - b], dim=-1))))


def pool(x: torch.Tensor, mask: Optional[torch.Tensor], how: str) -> torch.Tensor:
    """(B, L, H) -> (B, H): mean over the valid positions, or the last valid position; "none" keeps
    every position (B, L, H)."""
    if how == "none":
        return x
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
    the block arguments (d_model ... a_max) become ``self.block_options``, every block's. ``block``
    chooses the residual block: "lru" (:class:`LRUBlock`, the LRU paper's) or "hawk"
    (:class:`HawkBlock`, Griffin's, usually with ``layer="rglru"`` and ``norm="rms"``).
    ``gate_blocks``, ``a_min`` and ``a_max`` are the ``rglru`` layer's (see
    :class:`~torch_lru.layers.RGLRU`). ``pooling="none"`` gives per-step logits (B, L, d_output).

    A unidirectional model also runs token by token: ``state = model.init_state(batch)``, then
    ``logits, state = model.step(x_t, state)`` per token; after the last token the logits equal
    ``model(x)``'s (the pooling is carried in the state).
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
        block: str = "lru",
        gate_blocks: int = 1,
        a_min: float = 0.9,
        a_max: float = 0.999,
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
        if dual and pooling == "none":
            raise ValueError("LRUModel: a dual model classifies pairs of pooled sequences; pooling='none' has no pair")
        self.vocab_size, self.d_input, self.pooling, self.dual = vocab_size, d_input, pooling, dual
        self.encoder = nn.Embedding(vocab_size, d_model) if vocab_size is not None else nn.Linear(d_input, d_model)
        self.block_options = BlockOptions.from_flat(
            d_model,
            d_state,
            r_min,
            r_max,
            max_phase,
            bidirectional,
            norm,
            prenorm,
            dropout,
            layer,
            block,
            gate_blocks,
            a_min,
            a_max,
        )
        self.blocks = nn.ModuleList(make_block(self.block_options) for _ in range(n_layers))
        self.decoder = RetrievalHead(d_model, d_output) if dual else nn.Linear(d_model, d_output)

    def _check(self, x: torch.Tensor, mask: Optional[torch.Tensor], name: str) -> None:
        self._check_shapes(x, mask, name, values=True)

    def _check_shapes(self, x: torch.Tensor, mask: Optional[torch.Tensor], name: str, values: bool = False) -> None:
        if self.vocab_size is not None:
            ok = x.dim() == 2 and not x.is_floating_point() and not x.is_complex()
            expected = "token ids (B, L)"
            # An id out of range would index past the embedding (on a GPU, a device-side assert).
            # (Not while compiling or capturing a CUDA graph: the check reads values back to the host.)
            capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
            if values and ok and x.numel() and not torch.compiler.is_compiling() and not capturing:
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

    def _streams_as_one_op(self) -> bool:
        o = self.block_options
        if o.block != "lru" or o.layer.layer != "lru":
            return False
        if self.training and (o.dropout > 0 or o.norm == "batch"):
            return False  # dropout is the block's own op; check_steps explains BatchNorm
        return True

    def _stream_plan(self) -> tuple:
        """lru_model_step's arguments before the state (encoder weight and bias, vocabulary size,
        per block: norm weight, bias, running mean and variance (None where absent), the LRU's packed
        step weights, D, the GLU's weight and bias) and after it (norm kind, eps, prenorm, pooling,
        decoder weight and bias). Without autograd they are kept while every tensor they come from
        is at the same version (in-place updates and load_state_dict bump versions) and no parameter
        or buffer has been registered anywhere since (assigning a new one registers it; moving the
        model drops them, see _apply)."""
        compiling = torch.compiler.is_compiling()
        cached = None if compiling else getattr(self, "_stream_cache", None)
        if (
            cached is not None
            and cached[0] == _registrations[0]
            and not torch.is_grad_enabled()
            and all(t._version == v for t, v in zip(cached[1], cached[2]))
        ):
            return cached[3]
        generation = _registrations[0]
        encoder_bias = getattr(self.encoder, "bias", None)
        sources = [self.encoder.weight, self.decoder.weight, self.decoder.bias]
        sources += [encoder_bias] if encoder_bias is not None else []
        params = []
        for block in self.blocks:
            norm, lru = block.norm, block.lru
            batch = norm.kind == "batch"
            bias = getattr(norm, "bias", None)
            stats = [norm.running_mean, norm.running_var] if batch else [None, None]
            sources += [norm.weight, *lru.direction_parameters(), lru.D, block.glu.weight, block.glu.bias]
            sources += [t for t in (bias, *stats) if t is not None]
            params += [norm.weight, bias, *stats, *lru.step_weights(), lru.D, block.glu.weight, block.glu.bias]
        first = self.blocks[0]
        plan = (
            (self.encoder.weight, encoder_bias, self.vocab_size or 0, params),
            (first.norm.kind, first.norm.eps, first.prenorm, self.pooling, self.decoder.weight, self.decoder.bias),
        )
        if not torch.is_grad_enabled() and not compiling:
            self._stream_cache = (generation, sources, [t._version for t in sources], plan)
        return plan

    def _apply(self, fn, *args, **kwargs):
        self._stream_cache = None  # .to(), .float(), ...: the packed tensors would be stale
        return super()._apply(fn, *args, **kwargs)

    def _check_streaming(self) -> None:
        if self.block_options.layer.bidirectional:
            raise ValueError(
                "LRUModel.step: a bidirectional model needs the whole sequence (its reverse direction reads the "
                "future); streaming needs bidirectional=False"
            )
        if self.dual:
            raise ValueError("LRUModel.step: a dual model compares two whole sequences; it does not stream")

    def init_state(self, batch: int) -> list:
        """The state before the first token: each block's zero state, then the pooling's running
        sum (mean) or last output (last) (batch, d_model), then the count of valid steps (batch,)."""
        self._check_streaming()
        ref = self.decoder.weight
        pooled = torch.zeros(batch, self.block_options.layer.d_model, dtype=ref.dtype, device=ref.device)
        count = torch.zeros(batch, dtype=ref.dtype, device=ref.device)
        return [block.init_state(batch) for block in self.blocks] + [pooled, count]

    def step(
        self, x_t: torch.Tensor, state: Optional[list] = None, mask_t: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, list]:
        """One token -> ``(logits (B, d_output), new_state)``: the logits of the sequence so far (for
        ``pooling="none"``, this token's). ``x_t``: token ids (B,) or features (B, d_input); ``state``
        from :meth:`init_state` or the previous step (None: a fresh one); ``mask_t`` (B,) bool,
        false where this token is padding (that row's state is kept as it was)."""
        self._check_streaming()
        if state is None:
            state = self.init_state(x_t.shape[0])
        if len(state) != len(self.blocks) + 2:
            raise ValueError(
                f"LRUModel.step: the state holds {len(state)} tensors, expected {len(self.blocks) + 2} "
                "(one per block, the pooled features, the count); make it with init_state"
            )
        plan = self._stream_plan() if self._streams_as_one_op() else None
        if plan is not None:
            # Every block is an LRU block: the whole step is one op (torch_lru::lru_model_step), which
            # also checks the token ids (not while tracing or capturing a CUDA graph: that reads them).
            self._check_shapes(x_t.unsqueeze(1), None if mask_t is None else mask_t.unsqueeze(1), "x_t")
            check_ids = not torch.compiler.is_compiling() and not (
                x_t.is_cuda and torch.cuda.is_current_stream_capturing()
            )
            head, tail = plan
            return torch.ops.torch_lru.lru_model_step(x_t, *head, state, *tail, mask_t, check_ids)
        self._check(x_t.unsqueeze(1), None if mask_t is None else mask_t.unsqueeze(1), "x_t")
        z = self.encoder(x_t)
        new_state = []
        for block, block_state in zip(self.blocks, state):
            z, s = block.step(z, block_state)
            new_state.append(s)
        features, new_state = torch.ops.torch_lru.stream_finish(z, state, new_state, self.pooling, mask_t)
        return self.decoder(features), new_state
