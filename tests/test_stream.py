"""Streaming: LRUModel.step / init_state against the whole-sequence forward for every causal layer,
block, norm and pooling (with padding), per-step outputs (pooling="none"), the packed step weights
kept in sync with the parameters, gradients through steps, torch.compile, and refusals."""

import pytest
import torch

import torch_lru
from torch_lru.layers import LAYERS

NORMS = ("layer", "batch", "rms")


def model_for(layer="lru", block="lru", pooling="mean", norm="layer", prenorm=True, **kw):
    torch.manual_seed(0)
    model = torch_lru.LRUModel(
        4,
        d_model=12,
        d_state=8,
        n_layers=2,
        vocab_size=kw.pop("vocab_size", 9),
        layer=layer,
        block=block,
        pooling=pooling,
        norm=norm,
        prenorm=prenorm,
        **kw,
    ).double()
    if norm == "batch":  # running statistics that are not the defaults
        model(torch.randint(0, 9, (6, 15)) if model.vocab_size else torch.randn(6, 15, model.d_input).double())
    return model.eval()


def stream(model, x, mask=None):
    state, out = model.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        logits, state = model.step(x[:, t], state, None if mask is None else mask[:, t])
        out.append(logits)
    return out, state


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("block", ["lru", "hawk"])
@pytest.mark.parametrize("pooling", ["mean", "last", "none"])
def test_streamed_logits_equal_the_whole_sequence(layer, block, pooling):
    norm = NORMS[(LAYERS.index(layer) + (block == "hawk")) % 3]  # every norm with every layer, over the blocks
    model = model_for(layer, block, pooling, norm, prenorm=LAYERS.index(layer) % 2 == 0)
    x = torch.randint(0, 9, (3, 11))
    mask = torch.arange(11)[None] < torch.tensor([11, 6, 1])[:, None]
    with torch.no_grad():
        steps, _ = stream(model, x, mask)
        whole = model(x, mask)
    if pooling == "none":
        for t, logits in enumerate(steps):
            valid = mask[:, t]
            torch.testing.assert_close(logits[valid], whole[valid, t], rtol=0, atol=1e-10)
    else:
        torch.testing.assert_close(steps[-1], whole, rtol=0, atol=1e-10)
        # And at every prefix: the logits so far are those of the sequence cut there.
        torch.testing.assert_close(steps[4][:2], model(x[:2, :5]), rtol=0, atol=1e-10)


def test_features_and_pooling_none_shapes():
    model = model_for(pooling="none", vocab_size=None, d_input=3)
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    assert model(x).shape == (2, 7, 4)
    steps, state = stream(model, x)
    torch.testing.assert_close(torch.stack(steps, 1), model(x), rtol=0, atol=1e-10)
    assert len(state) == 2 + 2 and state[-1].tolist() == [7.0, 7.0]


def test_the_packed_step_weights_follow_the_parameters():
    model = model_for()
    layer = model.blocks[0].lru
    u = torch.randn(2, 12, dtype=torch.float64)
    with torch.no_grad():
        first = layer.step(u)[0]
        assert layer.step_weights() is layer.step_weights()  # packed once while nothing changes
        layer.B_re.add_(0.1)  # an in-place update, as an optimiser makes
        fresh = torch.ops.torch_lru.lru_step(u, *layer.direction_parameters(), layer.D)[0]
        torch.testing.assert_close(layer.step(u)[0], fresh, rtol=0, atol=0)
        assert not torch.equal(first, fresh)
        model.load_state_dict(model_for().state_dict())
        torch.testing.assert_close(layer.step(u)[0], first, rtol=0, atol=0)


def test_gradients_flow_through_steps():
    model = model_for(norm="layer").train()
    x = torch.randint(0, 9, (2, 6))
    steps, _ = stream(model, x)
    steps[-1].sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["blocks.0.lru.nu_log"].abs().sum() > 0 and grads["encoder.weight"].abs().sum() > 0
    model.zero_grad()
    model(x).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-9, atol=1e-11, msg=name)


def test_the_step_compiles_without_graph_breaks():
    model = model_for().float()
    step = torch.compile(model.step, backend="aot_eager", fullgraph=True)
    x = torch.randint(0, 9, (2, 5))
    state, eager = model.init_state(2), model.init_state(2)
    with torch.no_grad():
        for t in range(5):
            got, state = step(x[:, t], state)
            want, eager = model.step(x[:, t], eager)
            torch.testing.assert_close(got, want)


def test_models_that_cannot_stream_say_why():
    with pytest.raises(ValueError, match="a bidirectional model needs the whole sequence"):
        model_for(bidirectional=True).init_state(1)
    dual = torch_lru.LRUModel(2, d_model=8, d_state=4, n_layers=1, vocab_size=5, dual=True)
    with pytest.raises(ValueError, match="a dual model compares two whole sequences"):
        dual.step(torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="pooling='none' has no pair"):
        torch_lru.LRUModel(2, vocab_size=5, dual=True, pooling="none")
    model = model_for()
    with pytest.raises(ValueError, match="the state holds 2 tensors, expected 4"):
        model.step(torch.zeros(1, dtype=torch.long), model.init_state(1)[:2])
    with pytest.raises(ValueError, match=r"x_t holds token ids in \[9, 9\]"):
        model.step(torch.full((1,), 9))
    with pytest.raises(ValueError, match="BatchNorm needs running statistics; call .eval"):
        model_for(norm="batch").train().step(torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("prenorm", [True, False])
def test_the_cpu_block_loop_agrees_with_the_block_ops(norm, prenorm):
    """Without autograd a float32 LRU block of up to four rows steps in its own CPU loop
    (torch_lru::lru_block_step_cpu); with autograd the same step runs op by op."""
    model = model_for(norm=norm, prenorm=prenorm).float()
    block = model.blocks[0]
    for B in (1, 3, 4, 5):
        x = torch.randn(B, 12)
        state = torch.randn(B, 8, dtype=torch.complex64)
        with torch.no_grad():
            fast = block.step(x, state)
            also_fast = torch.ops.torch_lru.lru_block_step_cpu(
                x,
                norm,
                block.norm.weight,
                getattr(block.norm, "bias", None),
                *((block.norm.running_mean, block.norm.running_var) if norm == "batch" else (None, None)),
                block.norm.eps,
                prenorm,
                *block.lru.step_weights(),
                block.lru.D,
                block.glu.weight,
                block.glu.bias,
                state,
            )
        slow = block.step(x, state)  # autograd on: the composite path
        for a, b, c in zip(fast, slow, also_fast):
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(c, b.detach(), rtol=1e-5, atol=1e-6)


def test_the_models_packed_weights_follow_the_parameters():
    model = model_for().float()  # float32, one row: the stack steps as one op from a kept list
    x = torch.tensor([3])

    def fresh():  # with autograd on nothing is kept: the reference
        return model.step(x)[0].detach()

    with torch.no_grad():
        first = model.step(x)[0]
        assert model._stream_plan() is model._stream_plan()
        model.blocks[1].lru.B_re.mul_(3.0)  # in place, as an optimiser
        torch.testing.assert_close(model.step(x)[0], fresh(), rtol=0, atol=0)
        assert not torch.equal(model.step(x)[0], first)
        model.blocks[0].glu.bias = torch.nn.Parameter(torch.ones(24))  # replaced, not updated
        torch.testing.assert_close(model.step(x)[0], fresh(), rtol=0, atol=0)
        model.double()  # moved: a new dtype
        assert model.step(x)[0].dtype == torch.float64


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("prenorm", [True, False])
@pytest.mark.parametrize("pooling", ["mean", "last", "none"])
@pytest.mark.parametrize("vocab_size", [9, None])
def test_the_cpu_model_loop_agrees_with_the_composite_step(norm, prenorm, pooling, vocab_size):
    """Without autograd a float32 model of LRU blocks of up to four rows steps as one CPU loop
    (torch_lru::lru_model_step_cpu); with autograd the same step runs as the block ops and
    stream_finish. Padded rows (mask false) keep their states and pooled features in both."""
    model = model_for(norm=norm, prenorm=prenorm, pooling=pooling, vocab_size=vocab_size).float()
    for B in (1, 3, 4, 5):
        torch.manual_seed(B)
        xs = torch.randint(0, 9, (B, 6)) if vocab_size else torch.randn(B, 6, model.d_input)
        mask = torch.rand(B, 6) > 0.3
        fast_state = slow_state = model.init_state(B)
        for t in range(6):
            m = mask[:, t] if t % 2 else None
            with torch.no_grad():
                fast, fast_state = model.step(xs[:, t], fast_state, m)
            slow, slow_state = model.step(xs[:, t], slow_state, m)  # autograd on: the composite path
            torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-6)
            for a, b in zip(fast_state, slow_state):
                torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_the_cpu_model_loop_names_bad_input():
    model = model_for().float()
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"token id 9 \(row 1\), outside \[0, vocab_size = 9\)"):
            model.step(torch.tensor([0, 9]))
        head, tail = model._stream_plan()
        state = model.init_state(2)
        state[0] = state[0][:, :4]
        with pytest.raises(RuntimeError, match=r"block 0's state must be complex64 \(B, N\) = \(2, 8\)"):
            torch.ops.torch_lru.lru_model_step_cpu(torch.tensor([0, 1]), *head, state, *tail[:-2], *tail[-2:])
