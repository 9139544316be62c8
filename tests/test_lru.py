"""The LRU layer against the paper's equations in float64, and its streaming, masking, init and errors."""

import math

import pytest
import torch

import torch_lru
from torch_lru.reference import lru_loop, scan_loop

TOL = {torch.float32: 2e-5, torch.float64: 1e-11}


def make_layer(H=6, N=5, dtype=torch.float64, device="cpu", seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("r_min", 0.4)
    kw.setdefault("r_max", 0.99)
    return torch_lru.LRU(H, N, dtype=dtype, device=device, **kw)


def reference(layer, u, state=None):
    """Forward of `layer` by the paper's equations in float64 on the CPU (both directions)."""
    wide = [p.detach().cpu().double() for p in layer.direction_parameters()]
    u64 = u.detach().cpu().double()
    s64 = None if state is None else state.detach().cpu().to(torch.complex128)
    y, x = lru_loop(u64, *wide, layer.D.detach().cpu().double(), s64)
    if layer.bidirectional:
        rev = [p.detach().cpu().double() for p in layer.direction_parameters(reverse=True)]
        y = y + lru_loop(u64, *rev, None, None, reverse=True)[0]
    return y, x


def assert_close(actual, expected, dtype):
    scale = max(expected.abs().max().item(), 1.0) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach().cpu().to(expected.dtype), expected, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 17, 6, 5), (3, 64, 8, 33), (1, 300, 4, 2)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_forward_matches_the_papers_equations(device, dtype, shape, bidirectional):
    B, L, H, N = shape
    layer = make_layer(H, N, dtype, device, bidirectional=bidirectional)
    u = torch.randn(B, L, H, dtype=dtype, device=device)
    y = layer(u)
    assert y.shape == (B, L, H) and y.dtype == dtype and y.device.type == torch.device(device).type
    assert_close(y, reference(layer, u)[0], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_initial_and_final_state(device, dtype):
    layer = make_layer(4, 3, dtype, device)
    u = torch.randn(2, 20, 4, dtype=dtype, device=device)
    state = torch.randn(2, 3, dtype=layer.eigenvalues().dtype, device=device)
    y, final = layer(u, state, return_state=True)
    y_ref, x_ref = reference(layer, u, state)
    assert_close(y, y_ref, dtype)
    assert_close(final, x_ref[:, -1], dtype)
    assert final.shape == (2, 3) and final.dtype == state.dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_by_step_matches_forward(device, dtype):
    layer = make_layer(5, 7, dtype, device)
    u = torch.randn(3, 40, 5, dtype=dtype, device=device)
    y, final = layer(u, return_state=True)
    state, outputs = None, []
    for t in range(u.shape[1]):
        y_t, state = layer.step(u[:, t], state)
        outputs.append(y_t)
    assert_close(torch.stack(outputs, 1), y.detach().cpu().double(), dtype)
    assert_close(state, final.detach().cpu().to(torch.complex128), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunks_with_carried_state_equal_one_pass(device, dtype):
    layer = make_layer(4, 6, dtype, device)
    u = torch.randn(2, 100, 4, dtype=dtype, device=device)
    y, final = layer(u, return_state=True)
    state, pieces = None, []
    for piece in u.split([1, 30, 0, 45, 24], dim=1):
        y_piece, state = layer(piece, state, return_state=True)
        pieces.append(y_piece)
    assert_close(torch.cat(pieces, 1), y.detach().cpu().double(), dtype)
    assert_close(state, final.detach().cpu().to(torch.complex128), dtype)


def test_bidirectional_is_the_sum_of_two_directions_and_mirrors_under_time_reversal(device):
    layer = make_layer(4, 3, torch.float64, device, bidirectional=True)
    u = torch.randn(2, 30, 4, dtype=torch.float64, device=device)
    y = layer(u)
    # Swap the directions' parameters and reverse time: the skip term aside, the output mirrors.
    mirrored = make_layer(4, 3, torch.float64, device, bidirectional=True)
    with torch.no_grad():
        for name in torch_lru.modules.DIRECTION_PARAMETERS:
            getattr(mirrored, name).copy_(getattr(layer, name + "_rev"))
            getattr(mirrored, name + "_rev").copy_(getattr(layer, name))
        mirrored.D.copy_(layer.D)
    torch.testing.assert_close(mirrored(u.flip(1)).flip(1), y, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="bidirectional"):
        layer(u, return_state=True)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(u[:, 0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_a_valid_output(device, bidirectional):
    layer = make_layer(4, 5, torch.float64, device, bidirectional=bidirectional)
    lengths = [30, 17, 1, 0]
    mask = torch.arange(30, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    u = torch.randn(4, 30, 4, dtype=torch.float64, device=device)
    y = layer(u, mask=mask)
    noisy = torch.where(mask.unsqueeze(-1), u, 1e3 * torch.randn_like(u))
    y_noisy = layer(noisy, mask=mask)
    torch.testing.assert_close(y_noisy[mask], y[mask], rtol=0, atol=1e-9)
    # Each row equals the same sequence run alone at its own length (right padding), and so does
    # the same sequence padded on the left.
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        alone = layer(u[b : b + 1, :n])
        torch.testing.assert_close(y[b, :n], alone[0], rtol=0, atol=1e-10)
        left = torch.cat([torch.randn(1, 5, 4, dtype=u.dtype, device=device), u[b : b + 1, :n]], 1)
        left_mask = torch.arange(n + 5, device=device)[None] >= 5
        torch.testing.assert_close(layer(left, mask=left_mask)[0, 5:], alone[0], rtol=0, atol=1e-10)


def test_final_state_is_taken_at_the_last_valid_step(device):
    layer = make_layer(3, 4, torch.float64, device)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool, device=device)
    u = torch.randn(3, 5, 3, dtype=torch.float64, device=device)
    state = torch.randn(3, 4, dtype=torch.complex128, device=device)
    _, final = layer(u, state, return_state=True, mask=mask)
    _, x = reference(layer, torch.where(mask.unsqueeze(-1), u, 0), state)
    torch.testing.assert_close(final[0].cpu(), x[0, 2], rtol=0, atol=1e-12)
    torch.testing.assert_close(final[1].cpu(), x[1, 2], rtol=0, atol=1e-12)
    torch.testing.assert_close(final[2], state[2], rtol=0, atol=0)  # no valid step: the state passes through
    # Reverse direction: the state after its last step, at the first valid position.
    p = layer.direction_parameters()
    _, final_rev = torch_lru.lru(u, p, None, None, mask, reverse=True)
    _, x_rev = lru_loop(torch.where(mask.unsqueeze(-1), u, 0).cpu(), *[t.detach().cpu() for t in p], None, None, True)
    torch.testing.assert_close(final_rev[1].cpu(), x_rev[1, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "r_min, r_max, max_phase", [(0.0, 1.0, 2 * math.pi), (0.9, 0.999, math.pi / 10), (0.5, 0.5, 1.0)]
)
def test_ring_initialisation_statistics(r_min, r_max, max_phase):
    torch.manual_seed(0)
    H, N = 64, 20000
    layer = torch_lru.LRU(H, N, r_min, r_max, max_phase, dtype=torch.float64)
    lam = layer.eigenvalues().detach()
    modulus, phase = lam.abs(), torch.exp(layer.theta_log.detach())
    assert modulus.min() >= r_min - 1e-12 and modulus.max() <= r_max + 1e-12
    assert phase.min() >= 0 and phase.max() <= max_phase
    # Uniform on the ring's area: |lambda|^2 uniform on [r_min^2, r_max^2]; phase uniform.
    sq = modulus.square()
    lo, hi = r_min**2, r_max**2
    assert abs(sq.mean().item() - (lo + hi) / 2) < 0.02 * max(hi - lo, 1e-3) + 1e-12
    assert abs(sq.std().item() - (hi - lo) / math.sqrt(12)) < 0.02 * max(hi - lo, 1e-3) + 1e-9
    assert abs(phase.mean().item() - max_phase / 2) < 0.02 * max_phase
    gamma = torch.exp(layer.gamma_log.detach())
    torch.testing.assert_close(gamma, torch.sqrt(1 - modulus.square()), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(layer.B_re.std().item(), 1 / math.sqrt(2 * H), rtol=0.02, atol=0)
    torch.testing.assert_close(layer.B_im.std().item(), 1 / math.sqrt(2 * H), rtol=0.02, atol=0)
    torch.testing.assert_close(layer.C_re.std().item(), 1 / math.sqrt(N), rtol=0.02, atol=0)
    torch.testing.assert_close(layer.C_im.std().item(), 1 / math.sqrt(N), rtol=0.02, atol=0)
    assert layer.D.shape == (H,)


def test_parameter_names_and_shapes():
    layer = torch_lru.LRU(6, 4, bidirectional=True)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    direction = {"nu_log": (4,), "theta_log": (4,), "gamma_log": (4,), "B_re": (4, 6), "B_im": (4, 6)}
    direction.update({"C_re": (6, 4), "C_im": (6, 4)})
    expected = dict(direction, D=(6,), **{k + "_rev": v for k, v in direction.items()})
    assert shapes == expected


def test_the_same_seed_draws_the_same_parameters_and_generators_are_honoured():
    torch.manual_seed(3)
    a = torch_lru.LRU(5, 4).state_dict()
    torch.manual_seed(3)
    b = torch_lru.LRU(5, 4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert all(
        torch.equal(x, y)
        for x, y in zip(torch_lru.lru_init(5, 4, generator=g1), torch_lru.lru_init(5, 4, generator=g2))
    )


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    layer = torch_lru.LRU(3, 2, r_min=0.5, r_max=0.95, dtype=torch.float64)
    u = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    state = torch.randn(2, 2, dtype=torch.complex128, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in layer.direction_parameters()]
    D = layer.D.detach().clone().requires_grad_()
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)

    def f(u, state, D, *params):
        return torch_lru.lru(u, params, D, state, mask)

    assert torch.autograd.gradcheck(f, (u, state, D, *params))
    assert torch.autograd.gradcheck(lambda u, *p: torch_lru.lru(u, p, None, None, None, True)[0], (u, *params))
    assert torch.autograd.gradcheck(lambda u, s, D, *p: torch_lru.lru_step(u, p, D, s), (u[:, 0], state, D, *params))


def test_every_parameter_gets_a_gradient(device):
    layer = make_layer(4, 3, torch.float32, device, bidirectional=True)
    layer(torch.randn(2, 10, 4, device=device)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bf16_autocast_keeps_the_state_in_complex64():
    layer = make_layer(16, 8, torch.float32)
    u = torch.randn(2, 50, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = layer(u, return_state=True)
    assert state.dtype == torch.complex64
    torch.testing.assert_close(y.float(), layer(u), rtol=0.05, atol=0.05)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(RuntimeError, match="d_state must be positive, got 0"):
        torch_lru.LRU(4, 0)
    with pytest.raises(RuntimeError, match="d_model must be positive"):
        torch_lru.LRU(-1, 4)
    with pytest.raises(RuntimeError, match="r_min <= r_max"):
        torch_lru.LRU(4, 4, r_min=0.9, r_max=0.5)
    with pytest.raises(RuntimeError, match="r_max <= 1"):
        torch_lru.LRU(4, 4, r_max=1.5)
    with pytest.raises(RuntimeError, match="max_phase must be positive"):
        torch_lru.LRU(4, 4, max_phase=0.0)
    with pytest.raises(RuntimeError, match="dtype must be float32 or float64"):
        torch_lru.LRU(4, 4, dtype=torch.float16)
    layer = torch_lru.LRU(4, 3)
    with pytest.raises(RuntimeError, match=r"shape \(B, L, H\), got 2 dimensions"):
        layer(torch.randn(5, 4))
    with pytest.raises(RuntimeError, match="last dimension must be d_model = 4, got shape"):
        layer(torch.randn(2, 5, 7))
    with pytest.raises(RuntimeError, match="dtype Double differs from the parameters' Float"):
        layer(torch.randn(2, 5, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="real floating point"):
        layer(torch.randint(0, 3, (2, 5, 4)))
    with pytest.raises(RuntimeError, match=r"state must have shape \(B, N\) = \(2, 3\)"):
        layer(torch.randn(2, 5, 4), torch.zeros(2, 4, dtype=torch.complex64))
    with pytest.raises(RuntimeError, match="state must be ComplexFloat"):
        layer(torch.randn(2, 5, 4), torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="mask must be bool"):
        layer(torch.randn(2, 5, 4), mask=torch.ones(2, 5))
    with pytest.raises(RuntimeError, match=r"mask must have shape \(B, L\) = \(2, 5\)"):
        layer(torch.randn(2, 5, 4), mask=torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(RuntimeError, match=r"input must have shape \(B, H\)"):
        layer.step(torch.randn(2, 5, 4))
    with pytest.raises(RuntimeError, match=r"B_im must have shape \(N, H\)"):
        torch_lru.lru(
            torch.randn(2, 5, 4),
            [layer.nu_log, layer.theta_log, layer.gamma_log, layer.B_re, layer.C_re, layer.C_re, layer.C_im],
            None,
        )


def test_loop_reference_agrees_with_scan_reference():
    # The baseline of the benchmarks (complex matrices, a loop) is itself the layer.
    layer = make_layer(4, 3, torch.float64)
    u = torch.randn(2, 12, 4, dtype=torch.float64)
    p = [t.detach() for t in layer.direction_parameters()]
    y_loop, _ = lru_loop(u, *p, layer.D.detach(), scan=scan_loop)
    y_scan, _ = lru_loop(u, *p, layer.D.detach(), scan=torch_lru.scan)
    torch.testing.assert_close(y_loop, y_scan, rtol=0, atol=1e-12)
