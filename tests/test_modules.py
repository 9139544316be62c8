"""SequenceNorm, LRUBlock and LRUModel: masking, streaming, the retrieval head, torch.compile, errors."""

import warnings

import pytest
import torch
from torch import nn

import torch_lru
from torch_lru.modules import pool


def lengths_mask(lengths, L, device="cpu"):
    return torch.arange(L, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]


def test_masked_batch_norm_uses_valid_positions_only(device):
    torch.manual_seed(0)
    norm = torch_lru.SequenceNorm(5).to(device)
    reference = nn.BatchNorm1d(5).to(device)
    mask = lengths_mask([7, 3, 0], 7, device)
    x = torch.randn(3, 7, 5, device=device)
    noisy = torch.where(mask.unsqueeze(-1), x, 100 * torch.randn_like(x))
    y = norm(noisy, mask)
    expected = reference(x[mask])  # the same statistics over the 10 valid rows
    torch.testing.assert_close(y[mask], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.running_mean, reference.running_mean)
    torch.testing.assert_close(norm.running_var, reference.running_var)
    assert norm.num_batches_tracked.item() == 1
    # Without a mask, and in eval mode, it is nn.BatchNorm1d over the flattened positions.
    y_full = norm(x)
    torch.testing.assert_close(y_full.reshape(-1, 5), reference(x.reshape(-1, 5)))
    norm.eval(), reference.eval()
    torch.testing.assert_close(norm(x, mask), reference(x.reshape(-1, 5)).view(3, 7, 5))


def test_layer_norm_kind():
    norm = torch_lru.SequenceNorm(6, "layer")
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(norm(x), nn.functional.layer_norm(x, (6,)))
    assert set(dict(norm.named_buffers())) == set()


@pytest.mark.parametrize("norm", ["batch", "layer"])
@pytest.mark.parametrize("prenorm", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_block_padding_never_changes_a_valid_output(device, norm, prenorm, bidirectional):
    torch.manual_seed(0)
    block = torch_lru.LRUBlock(8, 6, bidirectional=bidirectional, norm=norm, prenorm=prenorm).to(device).double()
    mask = lengths_mask([20, 11, 4], 20, device)
    x = torch.randn(3, 20, 8, dtype=torch.float64, device=device)
    y = block(x, mask)
    noisy = torch.where(mask.unsqueeze(-1), x, 50 * torch.randn_like(x))
    torch.testing.assert_close(block(noisy, mask)[mask], y[mask], rtol=0, atol=1e-9)


@pytest.mark.parametrize("prenorm", [True, False])
def test_block_step_matches_forward_in_eval_mode(device, prenorm):
    torch.manual_seed(0)
    block = torch_lru.LRUBlock(8, 5, r_min=0.5, r_max=0.99, prenorm=prenorm).to(device).double()
    block(torch.randn(4, 10, 8, dtype=torch.float64, device=device))  # running statistics
    block.eval()
    x = torch.randn(2, 25, 8, dtype=torch.float64, device=device)
    y = block(x)
    state, steps = None, []
    for t in range(x.shape[1]):
        y_t, state = block.step(x[:, t], state)
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=0, atol=1e-10)
    block.train()
    with pytest.raises(ValueError, match="eval"):
        block.step(x[:, 0])


def test_pooling():
    x = torch.arange(24.0).view(2, 4, 3)
    mask = lengths_mask([2, 4], 4)
    torch.testing.assert_close(pool(x, mask, "mean"), torch.stack([x[0, :2].mean(0), x[1].mean(0)]))
    torch.testing.assert_close(pool(x, mask, "last"), torch.stack([x[0, 1], x[1, 3]]))
    torch.testing.assert_close(pool(x, None, "last"), x[:, -1])
    torch.testing.assert_close(pool(x, None, "mean"), x.mean(1))


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_model_padding_invariance_and_gradients(device, pooling, bidirectional):
    torch.manual_seed(0)
    model = torch_lru.LRUModel(
        5, d_model=16, d_state=8, n_layers=2, vocab_size=12, pooling=pooling, bidirectional=bidirectional
    )
    model = model.to(device).double()
    mask = lengths_mask([30, 9, 1], 30, device)
    x = torch.randint(0, 12, (3, 30), device=device)
    logits = model(x, mask)
    other = torch.where(mask, x, torch.randint(0, 12, x.shape, device=device))
    torch.testing.assert_close(model(other, mask), logits, rtol=0, atol=1e-9)
    logits.logsumexp(-1).sum().backward()
    # With last pooling the last block is read where its reverse direction starts: its state there
    # is B u alone, so that block's reverse eigenvalues rightly get no gradient.
    exempt = {f"blocks.1.lru.{n}_rev" for n in ("nu_log", "theta_log")} if pooling == "last" else set()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert (p.grad.abs().sum() > 0) != (name in exempt), name


def test_model_with_real_inputs_and_the_retrieval_head(device):
    torch.manual_seed(0)
    model = torch_lru.LRUModel(2, d_model=8, d_state=4, n_layers=1, d_input=3).to(device)
    assert model(torch.randn(4, 10, 3, device=device)).shape == (4, 2)
    dual = torch_lru.LRUModel(2, d_model=8, d_state=4, n_layers=1, vocab_size=20, dual=True).to(device)
    a, b = torch.randint(0, 20, (2, 3, 15), device=device)
    mask_a, mask_b = lengths_mask([15, 4, 9], 15, device), lengths_mask([2, 15, 7], 15, device)
    logits = dual(a, mask_a, b, mask_b)
    assert logits.shape == (3, 2)
    # The head sees [a, b, a*b, a-b]: the same pair encoded by hand gives the same logits.
    dual.eval()
    encoded = dual.encode(torch.cat([a, b]), torch.cat([mask_a, mask_b]))
    torch.testing.assert_close(dual.decoder(*encoded.chunk(2)), dual(a, mask_a, b, mask_b))


def test_whole_model_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = torch_lru.LRUModel(4, d_model=16, d_state=8, n_layers=2, vocab_size=10, bidirectional=True)
    x = torch.randint(0, 10, (3, 24))
    mask = lengths_mask([24, 10, 3], 24)
    eager = model(x, mask)
    eager.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    torch.manual_seed(0)
    ref = torch_lru.LRUModel(4, d_model=16, d_state=8, n_layers=2, vocab_size=10, bidirectional=True)
    compiled = torch.compile(ref, fullgraph=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*complex.*")  # inductor leaves complex ops to ATen
        out = compiled(x, mask)
        out.sum().backward()
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    for n, p in ref.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-5, msg=n)


def test_model_bad_arguments():
    with pytest.raises(ValueError, match="pooling must be one of"):
        torch_lru.LRUModel(2, pooling="max")
    with pytest.raises(ValueError, match="kind must be one of"):
        torch_lru.LRUModel(2, norm="group")
    with pytest.raises(ValueError, match="n_layers must be a positive integer, got 0"):
        torch_lru.LRUModel(2, n_layers=0)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(
            ValueError, match=rf"vocab_size must be a positive integer \(or None for features\), got {bad}"
        ):
            torch_lru.LRUModel(2, vocab_size=bad)
    for name in ("d_output", "d_model", "d_state", "d_input"):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer, got 0"):
            torch_lru.LRUModel(**{"d_output": 2, name: 0})
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        torch_lru.LRUModel(2, dropout=1.0)
    model = torch_lru.LRUModel(2, d_model=8, d_state=4, n_layers=1, vocab_size=5)
    for bad in (5, -1):
        tokens = torch.tensor([[0, 1, bad]])
        with pytest.raises(ValueError, match=r"x holds token ids in \[-?\d, \d\], outside \[0, vocab_size = 5\)"):
            model(tokens)
    with pytest.raises(ValueError, match=r"token ids \(B, L\), got \(2, 3, 1\)"):
        model(torch.zeros(2, 3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="mask of x must be bool"):
        model(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))
    with pytest.raises(ValueError, match="dual=False"):
        model(torch.zeros(2, 3, dtype=torch.long), x2=torch.zeros(2, 3, dtype=torch.long))
    real = torch_lru.LRUModel(2, d_model=8, d_state=4, n_layers=1, d_input=3)
    with pytest.raises(ValueError, match=r"features \(B, L, 3\)"):
        real(torch.randn(2, 5, 4))
    dual = torch_lru.LRUModel(2, d_model=8, d_state=4, n_layers=1, vocab_size=5, dual=True)
    with pytest.raises(ValueError, match="x2 is missing"):
        dual(torch.zeros(2, 3, dtype=torch.long))
