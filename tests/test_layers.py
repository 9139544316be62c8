"""The recurrent layers of torch_lru.layers: each against its recurrence written out from its
formulas in float64, zero-order hold against its closed form, initialisation, padding, a short
training run, options, and bad names."""

import math

import pytest
import torch
import torch.nn.functional as F

import torch_lru
from torch_lru import layers
from torch_lru.layers import LayerOptions
from torch_lru.reference import scan_loop

DIAGONAL = ("diag_complex", "diag_exp", "s5", "s4d")


def make(name, H=5, N=4, bidirectional=False, seed=0, **ring):
    torch.manual_seed(seed)
    ring = {"r_min": 0.5, "r_max": 0.95, **ring}
    return layers.make_layer(LayerOptions(H, N, name, bidirectional=bidirectional, **ring)).double()


def discretised_from_the_formulas(layer, reverse):
    """(lambda, B) of one direction, written out from each layer's parameterisation."""
    p = {
        name.removesuffix("_rev"): t.detach()
        for name, t in layer.named_parameters()
        if name.endswith("_rev") == reverse
    }
    B = torch.complex(p["B_re"], p["B_im"])
    if layer.kind == "diag_complex":
        return torch.complex(p["lam_re"], p["lam_im"]), B
    if layer.kind == "diag_exp":
        return torch.exp(-torch.exp(p["nu_log"])) * torch.exp(1j * torch.exp(p["theta_log"])), B
    Lambda = -torch.exp(p["a_log"]) + 1j * p["omega"]  # s5, s4d: zero-order hold with steps exp(log_step)
    lam = torch.exp(torch.exp(p["log_step"]) * Lambda)
    return lam, ((lam - 1) / Lambda)[:, None] * B


def reference_diagonal(layer, u):
    """x_k = lambda x_{k-1} + B u_k, y_k = Re(C x_k) + D u_k, one step at a time, both directions."""
    y = layer.D.detach() * u
    for reverse in (False, True) if layer.bidirectional else (False,):
        s = "_rev" if reverse else ""
        lam, B = discretised_from_the_formulas(layer, reverse)
        b_re, b_im = B.real, B.imag
        C = torch.complex(getattr(layer, "C_re" + s), getattr(layer, "C_im" + s)).detach()
        x = scan_loop(lam, u.to(lam.dtype) @ torch.complex(b_re, b_im).T, None, reverse)
        y = y + (x @ C.T).real
    return y


@pytest.mark.parametrize("name", DIAGONAL)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_diagonal_variants_match_their_recurrence(name, bidirectional):
    layer = make(name, bidirectional=bidirectional)
    u = torch.randn(3, 17, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(u), reference_diagonal(layer, u), rtol=0, atol=1e-11)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_linear_dense_matches_its_recurrence(bidirectional):
    layer = make("linear_dense", bidirectional=bidirectional)
    u = torch.randn(2, 9, 5, dtype=torch.float64)
    expected = layer.D.detach() * u
    for reverse in (False, True) if bidirectional else (False,):
        s = "_rev" if reverse else ""
        A, B, C = (getattr(layer, n + s).detach() for n in "ABC")
        x = torch.zeros(2, 4, dtype=torch.float64)
        out = [None] * 9
        for t in range(8, -1, -1) if reverse else range(9):
            x = x @ A.T + u[:, t] @ B.T
            out[t] = x @ C.T
        expected = expected + torch.stack(out, 1)
    torch.testing.assert_close(layer(u), expected, rtol=0, atol=1e-12)


def test_tanh_rnn_matches_its_recurrence():
    layer = make("tanh_rnn")
    u = torch.randn(2, 9, 5, dtype=torch.float64)
    r = layer.rnn
    x = torch.zeros(2, 4, dtype=torch.float64)
    out = []
    for t in range(9):
        x = torch.tanh(u[:, t] @ r.weight_ih_l0.T + r.bias_ih_l0 + x @ r.weight_hh_l0.T + r.bias_hh_l0)
        out.append(layer.out(x) + layer.D * u[:, t])
    torch.testing.assert_close(layer(u), torch.stack(out, 1), rtol=0, atol=1e-12)


def test_zero_order_hold_against_its_closed_form():
    torch.manual_seed(0)
    Lambda = torch.complex(-torch.rand(6, dtype=torch.float64) - 0.1, 3 * torch.randn(6, dtype=torch.float64))
    log_step = torch.log(torch.rand(6, dtype=torch.float64) * 0.5 + 0.01)
    B = torch.complex(torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64))
    lam, b_bar = layers.zoh(Lambda, log_step, B)
    for n in range(6):
        # exp([[L d, d], [0, 0]]) = [[exp(L d), (exp(L d) - 1) / L], [0, 1]]: the state after one step
        # of x' = L x + u with u held constant.
        d = torch.exp(log_step[n]).to(Lambda.dtype)
        M = torch.zeros(2, 2, dtype=Lambda.dtype)
        M[0, 0], M[0, 1] = Lambda[n] * d, d
        E = torch.linalg.matrix_exp(M)
        torch.testing.assert_close(lam[n], E[0, 0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b_bar[n], E[0, 1] * B[n], rtol=1e-12, atol=1e-12)


def test_initialisations():
    torch.manual_seed(0)
    eig = layers.hippo_n_eigenvalues(32)
    torch.testing.assert_close(eig.real, torch.full((32,), -0.5, dtype=torch.float64), rtol=0, atol=1e-6)
    assert (eig.imag > 0).all() and (eig.imag.diff() > 0).all()
    s4d = make("s4d", 8, 16)
    torch.testing.assert_close(-torch.exp(s4d.a_log.detach()), torch.full((16,), -0.5, dtype=torch.float64))
    torch.testing.assert_close(s4d.omega.detach(), math.pi * torch.arange(16.0, dtype=torch.float64))
    torch.testing.assert_close(s4d.B_re.detach(), torch.full((16, 8), 8**-0.5, dtype=torch.float64))
    s5 = make("s5", 8, 16)
    s5_Lambda = torch.complex(-torch.exp(s5.a_log), s5.omega).detach()
    torch.testing.assert_close(s5_Lambda, layers.hippo_n_eigenvalues(16), rtol=1e-6, atol=1e-5)
    steps = torch.exp(s4d.log_step.detach())
    assert steps.min() >= 1e-3 - 1e-9 and steps.max() <= 1e-1 + 1e-9
    for name in ("s4d", "s5"):
        lam = make(name, 8, 16).discretised(False)[0]
        assert (lam.abs() < 1).all(), name  # stable: Re(Lambda) < 0 and positive steps
    dc = make("diag_complex", 8, 2000, r_min=0.9, r_max=0.99)
    modulus = torch.complex(dc.lam_re, dc.lam_im).abs()
    assert modulus.min() >= 0.9 - 1e-6 and modulus.max() <= 0.99 + 1e-6


@pytest.mark.parametrize("name", layers.LAYERS)
def test_padding_never_changes_a_valid_output(name):
    layer = make(name, bidirectional=True)
    mask = torch.arange(12)[None] < torch.tensor([12, 7, 1])[:, None]
    u = torch.randn(3, 12, 5, dtype=torch.float64)
    noisy = torch.where(mask.unsqueeze(-1), u, 100 * torch.randn_like(u))
    kwargs = {"mask": mask}
    torch.testing.assert_close(layer(noisy, **kwargs)[mask], layer(u, **kwargs)[mask], rtol=0, atol=1e-9)
    alone = layer(u[1:2, :7])
    torch.testing.assert_close(layer(u, **kwargs)[1, :7], alone[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", layers.LAYERS)
def test_a_short_training_run_lowers_the_loss(name):
    torch.manual_seed(0)
    model = torch_lru.LRUModel(2, d_model=16, d_state=8, n_layers=1, d_input=1, layer=name, r_min=0.5, r_max=0.99)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    x = torch.randn(64, 24, 1)
    y = (x.sum((1, 2)) > 0).long()  # needs the whole sequence
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_block_and_model_take_a_layer_name():
    block = torch_lru.LRUBlock(torch_lru.modules.BlockOptions(LayerOptions(8, 4, "s5", bidirectional=True)))
    assert hasattr(block, "rnn") and not hasattr(block, "lru")
    assert block(torch.randn(2, 5, 8)).shape == (2, 5, 8)
    with pytest.raises(ValueError, match="S5: a bidirectional layer cannot run step by step"):
        block.eval().step(torch.randn(2, 8))
    with pytest.raises(ValueError, match="unknown recurrent layer 'gru'; the layers are tanh_rnn, linear_dense"):
        torch_lru.LRUModel(2, layer="gru")
    with pytest.raises(ValueError, match="valid prefix"):
        make("tanh_rnn", 4, 3).float()(torch.randn(1, 3, 4), mask=torch.tensor([[False, True, True]]))
    with pytest.raises(ValueError, match="unknown recurrent layer 'gru'"):
        LayerOptions(4, 3, "gru")


def test_diag_recurrence_op_checks_its_inputs():
    B = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match="lam must be ComplexFloat"):
        torch.ops.torch_lru.diag_recurrence(torch.randn(1, 2, 4), torch.ones(3), B, B, B.T, B.T, None)
    with pytest.raises(RuntimeError, match=r"C_im must have shape \(H, N\)"):
        lam = torch.ones(3, dtype=torch.complex64)
        torch.ops.torch_lru.diag_recurrence(torch.randn(1, 2, 4), lam, B, B, B.T, B, None)


def test_layers_take_only_the_options_they_use():
    for cls in (layers.TanhRNN, layers.LinearDense, layers.S5, layers.S4D):
        with pytest.raises(TypeError):
            cls(4, 3, r_min=0.5)  # no silently ignored keyword
    assert isinstance(layers.make_layer(LayerOptions(4, 3, "s5", r_min=0.5)), layers.S5)


def test_the_flat_block_arguments_still_work_with_a_warning():
    torch.manual_seed(3)
    with pytest.warns(DeprecationWarning, match="LRUBlock\\(d_model, d_state, ...\\) is deprecated"):
        old = torch_lru.LRUBlock(8, 4, r_min=0.5, bidirectional=True, norm="layer", layer="diag_exp")
    torch.manual_seed(3)
    new = torch_lru.LRUBlock(
        torch_lru.modules.BlockOptions.from_flat(8, 4, r_min=0.5, bidirectional=True, norm="layer", layer="diag_exp")
    )
    assert old.state_dict().keys() == new.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
    with pytest.raises(TypeError):
        torch_lru.LRUBlock(8, 4, ring_min=0.5)
    with pytest.warns(DeprecationWarning):
        import importlib

        import torch_lru.variants as variants

        importlib.reload(variants)
    assert isinstance(variants.make_layer("s4d", 4, 3), layers.S4D)


@pytest.mark.parametrize("name", layers.LAYERS)
def test_each_layer_names_its_recurrence_parameters(name):
    layer = make(name, bidirectional=True)
    own = {n.removesuffix("_rev") for n, _ in layer.named_parameters(recurse=False)}
    assert set(layer.recurrence_parameters) <= own
    assert not {"C_re", "C_im", "D"} & set(layer.recurrence_parameters)
