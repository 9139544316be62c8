"""Deprecated: the ablation's layers moved to torch_lru.layers (the same classes and names). This
module keeps the old entry points working, with a DeprecationWarning on import."""

import math
import warnings

from .layers import (  # noqa: F401
    LAYERS,
    S4D,
    S5,
    DiagComplex,
    DiagExp,
    LayerOptions,
    LinearDense,
    TanhRNN,
    check_layer,
    hippo_n_eigenvalues,
    zoh,
)
from .layers import make_layer as _make_layer

warnings.warn("torch_lru.variants is deprecated: use torch_lru.layers", DeprecationWarning, stacklevel=2)


def make_layer(name: str, d_model: int, d_state: int, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, bidirectional=False):
    """The old signature of torch_lru.layers.make_layer(LayerOptions(...))."""
    return _make_layer(LayerOptions(d_model, d_state, name, r_min, r_max, max_phase, bidirectional))
