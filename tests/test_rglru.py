"""The RG-LRU (Griffin's gated recurrence, torch_lru.layers.RGLRU) and Hawk's residual block: each op
against the paper's equations written out as loops in float64 (outputs, states and gradients),
the initialisation, streaming (step and chunks), padding, torch.compile, autocast and bad input."""

import pytest
import torch
import torch.nn.functional as F

import torch_lru
from torch_lru.layers import RGLRU, LayerOptions
from torch_lru.modules import BlockOptions, HawkBlock
from torch_lru.reference import rglru_loop

ops = torch.ops.torch_lru


def make(H=6, N=8, bidirectional=False, gate_blocks=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    return RGLRU(H, N, bidirectional, gate_blocks=gate_blocks, **kwargs).double()


def as_reference(layer):
    params = dict(layer.named_parameters())
    forward = {k: v for k, v in params.items() if not k.endswith("_rev")}
    reverse = {k.removesuffix("_rev"): v for k, v in params.items() if k.endswith("_rev")}
    return forward, ({**forward, **reverse} if layer.bidirectional else None)


def recurrence_loop(x, Lambda, W_a, b_a, W_x, b_x, c=8.0, h=None, reverse=False):
    """Equations 1-4 of the Griffin paper, one step at a time."""
    W_a, W_x = torch.block_diag(*W_a), torch.block_diag(*W_x)
    h = torch.zeros_like(x[:, 0]) if h is None else h
    out = [None] * x.shape[1]
    for t in range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1]):
        r = torch.sigmoid(x[:, t] @ W_a + b_a)
        i = torch.sigmoid(x[:, t] @ W_x + b_x)
        a = torch.sigmoid(Lambda) ** (c * r)
        h = a * h + torch.sqrt(1 - a**2) * (i * x[:, t])
        out[t] = h
    return torch.stack(out, 1), h


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("gate_blocks", [1, 4])
def test_the_layer_matches_the_papers_equations(bidirectional, gate_blocks):
    layer = make(bidirectional=bidirectional, gate_blocks=gate_blocks)
    u = torch.randn(3, 19, 6, dtype=torch.float64)
    forward, reverse = as_reference(layer)
    expected, expected_state = rglru_loop(u, forward, reverse_params=reverse)
    torch.testing.assert_close(layer(u), expected, rtol=0, atol=1e-12)
    if not bidirectional:
        _, state = layer(u, return_state=True)
        torch.testing.assert_close(state, expected_state, rtol=0, atol=1e-12)
        state0 = torch.randn(3, 4, 8, dtype=torch.float64)
        y, state = layer(u, state0, return_state=True)
        expected, expected_state = rglru_loop(u, forward, state=state0)
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(state, expected_state, rtol=0, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
def test_the_recurrence_op_and_its_gradients_match_the_loop(reverse):
    torch.manual_seed(1)
    p = ops.rglru_init(5, 6, 3, 0.5, 0.99, dtype=torch.float64)
    Lambda, W_a, b_a, W_x, b_x = (t.clone().requires_grad_() for t in p[8:13])
    b_a.data.normal_(), b_x.data.normal_()
    x = torch.randn(2, 11, 6, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    leaves = (x, Lambda, W_a, b_a, W_x, b_x, h0)
    h, final = ops.rglru_recurrence(x, Lambda, W_a, b_a, W_x, b_x, 8.0, h0, None, reverse)
    expected, expected_final = recurrence_loop(x, Lambda, W_a, b_a, W_x, b_x, 8.0, h0, reverse)
    torch.testing.assert_close(h, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(final, expected_final, rtol=0, atol=1e-12)
    g = torch.randn_like(h)
    got = torch.autograd.grad((h * g).sum(), leaves)
    want = torch.autograd.grad((expected * g).sum(), leaves)
    for name, a, b in zip(("x", "Lambda", "W_a", "b_a", "W_x", "b_x", "h0"), got, want):
        assert a.abs().sum() > 0, name  # every parameter, Lambda and the recurrence gate's included, gets a gradient
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=name)


def gates_formula(x, pre_a, pre_x, Lambda, c=8.0, mask=None):
    """Griffin's eqs. 2-4 from the gate pre-activations, in float64: (a, sqrt(1 - a^2) * i * x)."""
    x, pre_a, pre_x, Lambda = (t.double() for t in (x, pre_a, pre_x, Lambda))
    log_a = -c * torch.sigmoid(pre_a) * F.softplus(-Lambda)
    a = torch.exp(log_a)
    one_minus_a2 = torch.clamp_min(-torch.expm1(2 * log_a), torch.finfo(torch.float64).tiny)
    inp = x * torch.sigmoid(pre_x) * torch.sqrt(one_minus_a2)
    if mask is not None:
        a, inp = a.masked_fill(~mask[..., None], 1), inp.masked_fill(~mask[..., None], 0)
    return a, inp


def gates_inputs(shape, dtype, device, seed=0, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    N = shape[-1]
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    # pre-activations from -30 to 30 (sigmoid saturates, exp's clamps are reached) and Lambda from
    # a ~ 0.5 to a ~ 1 - 1e-7 (1 - a^2 near its clamp in float32)
    pre_a = 6 * torch.randn(shape, generator=gen, dtype=torch.float64)
    pre_a.view(-1, N)[0, : min(N, 4)] = torch.tensor([-30.0, 30.0, 0.0, -88.0])[: min(N, 4)]
    pre_x = 6 * torch.randn(shape, generator=gen, dtype=torch.float64)
    Lambda = torch.linspace(0.0, 14.0, N, dtype=torch.float64)
    return [t.to(dtype=dtype, device=device).requires_grad_(requires_grad) for t in (x, pre_a, pre_x, Lambda)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 37, 20), (5, 16), (2, 300, 64)])
@pytest.mark.parametrize("masked", [False, True])
def test_the_gates_op_and_its_gradients_match_the_formula(device, dtype, shape, masked):
    # On the CPU the fused kernels (float32: their own exp and expm1); elsewhere the ATen formula.
    inputs = gates_inputs(shape, dtype, device)
    mask = (torch.rand(shape[:-1], generator=torch.Generator().manual_seed(3)) > 0.3).to(device) if masked else None
    a, inp = ops.rglru_gates(*inputs, 8.0, mask)
    want_a, want_inp = gates_formula(*inputs, 8.0, mask)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.double(), want_a, **tol)
    torch.testing.assert_close(inp.double(), want_inp, **tol)
    if masked:
        assert (a[~mask] == 1).all() and (inp[~mask] == 0).all()
    gen = torch.Generator().manual_seed(5)
    ga, gi = (torch.randn(a.shape, generator=gen, dtype=a.dtype).to(device) for _ in range(2))
    got = torch.autograd.grad((a, inp), inputs, (ga, gi))
    want = torch.autograd.grad((want_a, want_inp), inputs, (ga.double(), gi.double()))
    for name, g, w in zip(("x", "pre_a", "pre_x", "Lambda"), got, want):
        w = w.double()  # computed in float64, returned in the input's dtype
        scale = w.abs().max().item()  # gradients summed over many rows are compared against their size
        atol = (2e-6 if dtype == torch.float32 else 1e-12) * max(scale, 1.0)
        torch.testing.assert_close(g.double(), w, rtol=tol["rtol"] * 10, atol=atol, msg=name)
        if masked and name != "Lambda":
            assert (g[~mask] == 0).all(), name


def test_the_gates_grad_lambda_does_not_depend_on_the_thread_count():
    inputs = gates_inputs((4, 1000, 32), torch.float32, "cpu")
    threads = torch.get_num_threads()
    grads = []
    for n in (1, max(2, threads)):
        torch.set_num_threads(n)
        try:
            a, inp = ops.rglru_gates(*inputs)
            grads.append(torch.autograd.grad((a.sum() + inp.sum()), inputs))
        finally:
            torch.set_num_threads(threads)
    for g1, g2 in zip(*grads):
        assert torch.equal(g1, g2)


def test_the_gates_op_propagates_nan_and_takes_mixed_dtypes():
    x, pre_a, pre_x, Lambda = gates_inputs((2, 5, 8), torch.float32, "cpu", requires_grad=False)
    pre_a[0, 1, 2] = float("nan")
    a, inp = ops.rglru_gates(x, pre_a, pre_x, Lambda)
    assert a[0, 1, 2].isnan() and inp[0, 1, 2].isnan()
    assert a.isnan().sum() == 1 and inp.isnan().sum() == 1
    for shape in ((0, 5, 8), (2, 0, 8)):  # empty inputs give empty outputs (and gradients)
        empty = [torch.zeros(shape, requires_grad=True) for _ in range(3)]
        a0, inp0 = ops.rglru_gates(*empty, Lambda)
        assert a0.shape == inp0.shape == shape
        assert torch.autograd.grad(a0.sum() + inp0.sum(), empty[0])[0].shape == shape
    # pre-activations in bfloat16 (as autocast's projections give them): the ATen formula, promoted
    # to float32 (its sigmoids round to bfloat16, hence the tolerance)
    a16, inp16 = ops.rglru_gates(x, pre_a.bfloat16(), pre_x.bfloat16(), Lambda)
    assert a16.dtype == inp16.dtype == torch.float32
    want_a, want_inp = gates_formula(x, pre_a.bfloat16().float(), pre_x.bfloat16().float(), Lambda)
    torch.testing.assert_close(a16.double(), want_a, rtol=2e-2, atol=1e-3, equal_nan=True)
    torch.testing.assert_close(inp16.double(), want_inp, rtol=2e-2, atol=1e-3, equal_nan=True)


def test_the_gates_op_passes_opcheck_and_gradgradcheck(device):
    for dtype in (torch.float32, torch.float64):
        for masked in (False, True):
            inputs = gates_inputs((2, 7, 6), dtype, device)
            mask = torch.tensor([[1, 1, 0, 1, 0, 1, 1], [0, 1, 1, 1, 1, 1, 0]], dtype=torch.bool, device=device)
            torch.library.opcheck(ops.rglru_gates.default, (*inputs, 8.0, mask if masked else None))
    x, pre_a, pre_x, Lambda = gates_inputs((2, 3, 4), torch.float64, device)
    with torch.no_grad():
        pre_a.clamp_(-3, 3), Lambda.clamp_(max=4)  # away from the clamps, where finite differences mislead

    def f(*t):
        return ops.rglru_gates(*t, 8.0, None)

    assert torch.autograd.gradcheck(f, (x, pre_a, pre_x, Lambda))
    assert torch.autograd.gradgradcheck(f, (x, pre_a, pre_x, Lambda))


def test_the_gates_op_names_bad_input():
    x, pre_a, pre_x, Lambda = gates_inputs((2, 5, 8), torch.float32, "cpu", requires_grad=False)
    with pytest.raises(RuntimeError, match=r"rglru_gates: pre_a must have x's shape \[2, 5, 8\], got \[2, 4, 8\]"):
        ops.rglru_gates(x, pre_a[:, :4], pre_x, Lambda)
    with pytest.raises(RuntimeError, match=r"x must have shape \(..., N\) with N = 7 \(Lambda's length\)"):
        ops.rglru_gates(x, pre_a, pre_x, Lambda[:7])
    with pytest.raises(RuntimeError, match=r"mask must have x's shape without its last dimension, \[2, 5\]"):
        ops.rglru_gates(x, pre_a, pre_x, Lambda, 8.0, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="mask must be bool"):
        ops.rglru_gates(x, pre_a, pre_x, Lambda, 8.0, torch.ones(2, 5))
    with pytest.raises(RuntimeError, match="c must be positive, got -1"):
        ops.rglru_gates(x, pre_a, pre_x, Lambda, -1.0)
    with pytest.raises(RuntimeError, match="pre_x must be real floating point, got Long"):
        ops.rglru_gates(x, pre_a, pre_x.long(), Lambda)


def taps_formula(padded, weight, bias, reverse=False):
    """y_t = sum_j weight[j] padded[t + K-1-j] (padded[t + j] when reverse) + bias, in the order of j."""
    K, L = weight.shape[0], padded.shape[1] - weight.shape[0] + 1
    y = None
    for j in range(K):
        start = j if reverse else K - 1 - j
        tap = padded[:, start : start + L] * weight[j]
        y = tap if y is None else y + tap
    return y + bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("reverse", [False, True])
def test_the_conv_taps_op_and_its_gradients_match_the_formula(device, dtype, K, reverse):
    gen = torch.Generator().manual_seed(K)
    for B, L, N in ((3, 300, 7), (2, 1, 5), (1, 600, 16)):
        padded, weight, bias = (
            torch.randn(shape, generator=gen, dtype=dtype).to(device).requires_grad_()
            for shape in ((B, L + K - 1, N), (K, N), (N,))
        )
        y = ops.conv_taps(padded, weight, bias, reverse)
        want = taps_formula(padded, weight, bias, reverse)
        assert torch.equal(y, want)  # the same products summed in the same order
        g = torch.randn(y.shape, generator=gen, dtype=dtype).to(device)
        got = torch.autograd.grad(y, (padded, weight, bias), g)
        # the reference in float64; weight and bias sum B*L terms, in another order
        exact = [t.detach().double().requires_grad_() for t in (padded, weight, bias)]
        wanted = torch.autograd.grad(taps_formula(*exact, reverse), exact, g.double())
        eps = 1e-6 if dtype == torch.float32 else 1e-14
        for name, a, b in zip(("padded", "weight", "bias"), got, wanted):
            atol = eps * (1 if name == "padded" else B * L)
            torch.testing.assert_close(a.double(), b, rtol=10 * eps, atol=atol, msg=name)


def test_the_conv_taps_op_passes_opcheck_gradgradcheck_and_is_deterministic(device):
    for reverse in (False, True):
        padded = torch.randn(2, 9, 3, dtype=torch.float64, device=device, requires_grad=True)
        weight = torch.randn(4, 3, dtype=torch.float64, device=device, requires_grad=True)
        bias = torch.randn(3, dtype=torch.float64, device=device, requires_grad=True)
        torch.library.opcheck(ops.conv_taps.default, (padded, weight, bias, reverse))

        def f(*t, reverse=reverse):
            return ops.conv_taps(*t, reverse)

        assert torch.autograd.gradcheck(f, (padded, weight, bias))
        assert torch.autograd.gradgradcheck(f, (padded, weight, bias))
    padded, weight, bias = (torch.randn(s, requires_grad=True) for s in ((4, 2003, 32), (4, 32), (32,)))
    threads, grads = torch.get_num_threads(), []
    for n in (1, max(2, threads)):
        torch.set_num_threads(n)
        try:
            grads.append(torch.autograd.grad(ops.conv_taps(padded, weight, bias).sum(), (weight, bias)))
        finally:
            torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    empty = ops.conv_taps(torch.zeros(0, 3, 2), torch.ones(4, 2), torch.ones(2))
    assert empty.shape == (0, 0, 2)


def test_the_conv_taps_op_names_bad_input():
    padded, weight, bias = torch.randn(2, 9, 3), torch.randn(4, 3), torch.randn(3)
    with pytest.raises(RuntimeError, match=r"conv_taps: padded must have shape \(B, L \+ K - 1, N\) with K = 4"):
        ops.conv_taps(padded[:, :2], weight, bias)
    with pytest.raises(RuntimeError, match=r"bias must have shape \(N,\) = \(3,\), got \[4\]"):
        ops.conv_taps(padded, weight, torch.randn(4))
    with pytest.raises(RuntimeError, match="padded must be Float on cpu \\(like weight\\), got Double"):
        ops.conv_taps(padded.double(), weight, bias)
    with pytest.raises(RuntimeError, match=r"weight must have shape \(K, N\) with K >= 1"):
        ops.conv_taps(padded, weight[0], bias)
    with pytest.raises(RuntimeError, match=r"weight must have shape \(K, N\) with K >= 1"):
        ops.conv_taps_backward(torch.randn(2, 6, 3), padded, weight[0], False)
    with pytest.raises(RuntimeError, match=r"weight must have shape \(K, N\) with K >= 1, got \[\]"):
        ops.conv_taps_backward(torch.randn(2, 6, 3), padded, weight[0, 0], False)


def test_gradcheck_of_the_whole_layer():
    layer = make(H=3, N=4, gate_blocks=2, a_min=0.6, a_max=0.95)
    names = torch.ops.torch_lru.rglru_parameter_names(False)
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    for p in params:
        if p.dim() == 1:
            p.data.normal_(0, 0.5)  # biases away from zero, so every path carries a gradient
    u = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    state = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)

    def f(u, state, *params):
        y, final = ops.rglru(u, list(params), False, 8.0, state)
        return y, final

    assert len(names) == len(params)
    assert torch.autograd.gradcheck(f, (u, state, *params), eps=1e-6, atol=1e-7)


def test_the_convolution_is_a_causal_depthwise_conv1d():
    torch.manual_seed(2)
    x = torch.randn(3, 10, 5, dtype=torch.float64)
    w = torch.randn(4, 5, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    # y_t = b + sum_j w[j] x_{t-j}: torch's conv1d (a correlation) with the taps reversed, padded left.
    kernel = w.flip(0).T.unsqueeze(1)  # (N, 1, K)
    expected = F.conv1d(F.pad(x.transpose(1, 2), (3, 0)), kernel, b, groups=5).transpose(1, 2)
    y, state = ops.causal_conv1d(x, w, b)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, x[:, -3:])
    backwards = F.conv1d(F.pad(x.transpose(1, 2), (0, 3)), w.T.unsqueeze(1), b, groups=5).transpose(1, 2)
    y, state = ops.causal_conv1d(x, w, b, reverse=True)
    torch.testing.assert_close(y, backwards, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, x[:, :3].flip(1))  # oldest first in the direction of travel
    # In pieces, with the state carried, the same as one pass.
    y1, s1 = ops.causal_conv1d(x[:, :2], w, b)
    y2, s2 = ops.causal_conv1d(x[:, 2:], w, b, s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(s2, x[:, -3:])


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    p = dict(zip(ops.rglru_parameter_names(True), ops.rglru_init(16, 4096, 8, 0.9, 0.999, True, dtype=torch.float64)))
    for suffix in ("", "_rev"):
        a_c = torch.sigmoid(p["Lambda" + suffix]) ** 8  # a^c, uniform in [0.9, 0.999] (section 2.4)
        assert a_c.min() >= 0.9 - 1e-12 and a_c.max() <= 0.999 + 1e-12
        torch.testing.assert_close(a_c.mean().item(), 0.9495, rtol=0, atol=3e-3)
        torch.testing.assert_close(a_c.std().item(), 0.099 / 12**0.5, rtol=0.05, atol=0)
        assert p["W_a" + suffix].shape == (8, 512, 512) and p["W_x" + suffix].shape == (8, 512, 512)
        for bias in ("b_a", "b_x", "conv_bias"):
            assert not p[bias + suffix].any()
    torch.testing.assert_close(p["W_a"].std().item(), 512**-0.5, rtol=0.01, atol=0)
    torch.testing.assert_close(p["W_in_x"].std().item(), 16**-0.5, rtol=0.02, atol=0)
    torch.testing.assert_close(p["W_out"].std().item(), 4096**-0.5, rtol=0.02, atol=0)
    torch.testing.assert_close(p["conv_weight"].std().item(), 0.05, rtol=0.05, atol=0)
    # One seed, one draw; float32 by default.
    torch.manual_seed(5)
    first = ops.rglru_init(4, 6)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(first, ops.rglru_init(4, 6))) and first[0].dtype == torch.float32


def test_step_and_chunks_continue_the_sequence():
    layer = make()
    u = torch.randn(2, 13, 6, dtype=torch.float64)
    y, final = layer(u, return_state=True)
    state, steps = None, []
    for t in range(13):
        y_t, state = layer.step(u[:, t], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=0, atol=1e-13)
    torch.testing.assert_close(state, final, rtol=0, atol=1e-13)
    # The state is the convolution's last three inputs, then h.
    x = u @ layer.W_in_x.T + layer.b_in_x
    torch.testing.assert_close(final[:, :3], x[:, -3:], rtol=0, atol=1e-13)
    pieces, state = [], layer.init_state(2)
    for start, stop in ((0, 1), (1, 5), (5, 5), (5, 6), (6, 13)):  # an empty piece keeps the state
        y_part, state = layer(u[:, start:stop], state, return_state=True)
        pieces.append(y_part)
    torch.testing.assert_close(torch.cat(pieces, 1), y, rtol=0, atol=1e-13)
    torch.testing.assert_close(state, final, rtol=0, atol=1e-13)


def test_padding_keeps_the_state_of_the_last_valid_step():
    layer = make()
    lengths = torch.tensor([11, 4, 0])
    mask = torch.arange(11)[None] < lengths[:, None]
    u = torch.randn(3, 11, 6, dtype=torch.float64)
    noisy = torch.where(mask.unsqueeze(-1), u, 1e3 * torch.randn_like(u))
    state0 = torch.randn(3, 4, 8, dtype=torch.float64)
    y, final = layer(noisy, state0, return_state=True, mask=mask)
    for row, n in enumerate(lengths.tolist()):
        alone, alone_final = layer(u[row : row + 1, :n], state0[row : row + 1], return_state=True)
        torch.testing.assert_close(y[row, :n], alone[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(final[row], alone_final[0], rtol=0, atol=1e-12)


def test_bidirectional_layers_refuse_state_and_step():
    layer = make(bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional layer sees the whole sequence"):
        layer(torch.randn(1, 3, 6, dtype=torch.float64), return_state=True)
    with pytest.raises(ValueError, match="cannot run step by step"):
        layer.step(torch.randn(1, 6, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="a bidirectional layer sees the whole sequence; it takes no state"):
        ops.rglru(torch.randn(1, 3, 6, dtype=torch.float64), list(layer.parameters()), True, 8.0, torch.zeros(1, 4, 8))


def test_bad_input_is_named():
    layer = make()
    params = list(layer.parameters())
    u = torch.randn(2, 5, 6, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"state must have shape \(B, 4, N\) = \(2, 4, 8\)"):
        layer(u, torch.zeros(2, 3, 8, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"the input's last dimension|input must have shape \(B, L, H\) with N = 6"):
        layer(torch.randn(2, 5, 7, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="the input's dtype Float differs from the parameters' Double"):
        layer(u.float())
    with pytest.raises(RuntimeError, match=r"mask must have shape \(B, L\) = \(2, 5\)"):
        layer(u, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="expected the 13 parameters"):
        ops.rglru(u, params[:-1])
    with pytest.raises(RuntimeError, match=r"W_out must have shape \[6, 8\]"):
        ops.rglru(u, params[:4] + [params[4].T] + params[5:])
    with pytest.raises(RuntimeError, match="n_blocks must be a positive divisor of d_state = 8, got 3"):
        RGLRU(6, 8, gate_blocks=3)
    with pytest.raises(RuntimeError, match="0 < a_min <= a_max < 1"):
        RGLRU(6, 8, a_min=0.99, a_max=0.9)
    with pytest.raises(RuntimeError, match="c must be positive"):
        ops.rglru_recurrence(torch.randn(1, 2, 8), *[p.float() for p in params[8:13]], 0.0)


def test_padding_and_autocast_in_a_model():
    torch.manual_seed(0)
    model = torch_lru.LRUModel(3, d_model=16, d_state=12, n_layers=2, vocab_size=9, layer="rglru", bidirectional=True)
    x = torch.randint(0, 9, (3, 10))
    mask = torch.arange(10)[None] < torch.tensor([10, 6, 2])[:, None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x, mask)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    y.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.blocks[0].rnn.Lambda.grad.abs().sum() > 0


def hawk(layer="rglru", norm="rms", prenorm=True, bidirectional=False, dropout=0.0):
    torch.manual_seed(0)
    options = BlockOptions(LayerOptions(8, 12, layer, bidirectional=bidirectional), norm, prenorm, dropout, "hawk")
    return HawkBlock(options).double()


def test_hawk_block_is_the_papers_residual_block():
    block = hawk()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    # x + RG-LRU block(RMSNorm(x)), then + gated MLP(RMSNorm(.)) of width 3 H.
    rms = lambda t, w: t * torch.rsqrt(t.square().mean(-1, keepdim=True) + 1e-5) * w  # noqa: E731
    mid = x + block.rnn(rms(x, block.norm.weight))
    z = rms(mid, block.mlp_norm.weight)
    expected = mid + block.mlp_down(F.gelu(block.mlp_gate(z)) * block.mlp_up(z))
    torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)
    assert block.mlp_up.out_features == 24 and not hasattr(block.norm, "bias")


@pytest.mark.parametrize("norm,prenorm", [("rms", True), ("layer", False), ("batch", True)])
@pytest.mark.parametrize("layer", ["rglru", "lru"])
def test_hawk_block_steps_as_it_runs(norm, prenorm, layer):
    block = hawk(layer, norm, prenorm)
    if norm == "batch":
        block(torch.randn(4, 9, 8, dtype=torch.float64))  # running statistics that are not the defaults
    block.eval()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    state, steps = None, []
    for t in range(9):
        y_t, state = block.step(x[:, t], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), block(x), rtol=0, atol=1e-9)


def test_hawk_block_padding_never_changes_a_valid_output():
    block = hawk(bidirectional=True)
    mask = torch.arange(9)[None] < torch.tensor([9, 3])[:, None]
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    noisy = torch.where(mask.unsqueeze(-1), x, 50 * torch.randn_like(x))
    torch.testing.assert_close(block(noisy, mask)[mask], block(x, mask)[mask], rtol=0, atol=1e-10)
    torch.testing.assert_close(block(x, mask)[1, :3], block(x[1:, :3])[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("block", ["lru", "hawk"])
def test_rglru_models_compile_without_graph_breaks(block):
    torch.manual_seed(0)
    model = torch_lru.LRUModel(
        3, d_model=16, d_state=8, n_layers=2, vocab_size=9, layer="rglru", block=block, norm="rms", bidirectional=True
    )
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    for L in (7, 12):
        x = torch.randint(0, 9, (2, L))
        mask = torch.arange(L)[None] < torch.tensor([L, 3])[:, None]
        torch.testing.assert_close(compiled(x, mask), model(x, mask), rtol=1e-5, atol=1e-6)
        compiled(x, mask).sum().backward()


def test_the_step_compiles_without_graph_breaks():
    layer = make().float()
    step = torch.compile(layer.step, backend="aot_eager", fullgraph=True)
    u = torch.randn(2, 6)
    state = layer.init_state(2)
    y, new_state = step(u, state)
    y_ref, state_ref = layer.step(u, state)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(new_state, state_ref)
