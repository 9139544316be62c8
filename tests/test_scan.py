"""The scan op against its definition (a float64 sequential loop), its gradients, and its contract."""

import contextlib
import os
import random

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import torch_lru
from torch_lru.reference import scan_loop

DTYPES = [torch.float32, torch.float64, torch.complex64, torch.complex128]
WIDE = {
    torch.float32: torch.float64,
    torch.float64: torch.float64,
    torch.complex64: torch.complex128,
    torch.complex128: torch.complex128,
}


def make_lam(shape, dtype, device, r_min=0.5, r_max=0.99, generator=None):
    """Coefficients with r_min <= |lam| <= r_max (random phase when complex)."""
    r = r_min + (r_max - r_min) * torch.rand(shape, generator=generator, dtype=torch.float64)
    if dtype.is_complex:
        phase = 2 * torch.pi * torch.rand(shape, generator=generator, dtype=torch.float64)
        lam = torch.polar(r, phase)
    else:
        sign = torch.where(torch.rand(shape, generator=generator) < 0.2, -1.0, 1.0).double()
        lam = r * sign
    return lam.to(dtype=dtype, device=device)


def make_inputs(B, L, N, dtype, device, per_step=False, with_h0=True, seed=0, **lam_kw):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, N, generator=g, dtype=WIDE[dtype]).to(dtype=dtype, device=device)
    lam = make_lam((B, L, N) if per_step else (N,), dtype, device, generator=g, **lam_kw)
    h0 = torch.randn(B, N, generator=g, dtype=WIDE[dtype]).to(dtype=dtype, device=device) if with_h0 else None
    return lam, x, h0


def reference(lam, x, h0, reverse):
    wide = WIDE[x.dtype]
    return scan_loop(lam.cpu().to(wide), x.cpu().to(wide), None if h0 is None else h0.cpu().to(wide), reverse)


def assert_close_to_reference(out, ref, dtype):
    # Single precision: rounding grows with the state's size, so compare relative to its scale.
    scale = ref.abs().max().item() if ref.numel() else 1.0
    tol = (2e-5 if dtype in (torch.float32, torch.complex64) else 1e-12) * max(scale, 1.0)
    torch.testing.assert_close(out.cpu().to(ref.dtype), ref, rtol=0, atol=tol)


def assert_same_result(a, b):
    """Two computations of the same scan: bitwise equal on the CPU and in CUDA's deterministic
    mode; in CUDA's default mode the look-back's depth depends on timing, so the rounding may
    differ in the last bits."""
    if a.device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        single = a.dtype in (torch.float32, torch.complex64)
        scale = max(b.abs().max().item(), 1.0)
        torch.testing.assert_close(a, b, rtol=0, atol=(1e-5 if single else 1e-12) * scale)
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class deterministic_algorithms:
    """torch.use_deterministic_algorithms(True) within a block."""

    def __enter__(self):
        self.was = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.was)


# Odd sizes, L = 1, B = 1, N = 1, sizes around the CPU kernel's block width (16..256 channels).
SHAPES = [
    (1, 1, 1),
    (1, 7, 1),
    (3, 1, 5),
    (2, 33, 17),
    (1, 100, 300),
    (5, 64, 16),
    (4, 129, 257),
    (2, 1000, 3),
    (1, 3000, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_forward_matches_reference(device, dtype, shape, per_step, reverse):
    for with_h0 in (False, True):
        lam, x, h0 = make_inputs(*shape, dtype, device, per_step=per_step, with_h0=with_h0, seed=hash(shape) % 1000)
        out = torch_lru.scan(lam, x, h0, reverse)
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device and out.is_contiguous()
        assert_close_to_reference(out, reference(lam, x, h0, reverse), dtype)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float64])
def test_random_shapes_and_seeds(device, dtype):
    rng = random.Random(1234)
    for trial in range(25):
        B, L, N = rng.randint(1, 6), rng.randint(1, 700), rng.randint(1, 70)
        per_step, reverse, with_h0 = rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5
        lam, x, h0 = make_inputs(B, L, N, dtype, device, per_step, with_h0, seed=trial)
        assert_close_to_reference(torch_lru.scan(lam, x, h0, reverse), reference(lam, x, h0, reverse), dtype)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_split_along_length(device, threads, per_step, reverse):
    """Few channels and a long sequence: the CPU kernel splits L into chunks (more chunks with more
    threads); the result must not depend on how it splits."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # from 1 to 16 MB L is split in one chunk per thread, the first the longest (the last three;
        # 10 MB is past the caches, where a per-step forward on two threads takes chunks sized for L2)
        for B, L, N in [(1, 20_000, 1), (2, 9_000, 3), (1, 5_001, 16), (2, 4_100, 16), (1, 4_100, 160)]:
            lam, x, h0 = make_inputs(B, L, N, torch.complex128, device, per_step, seed=L, r_min=0.999, r_max=0.99999)
            out = torch_lru.scan(lam, x, h0, reverse)
            assert_close_to_reference(out, reference(lam, x, h0, reverse), torch.complex128)
            g = torch.randn_like(out)
            got = torch.ops.torch_lru.scan_backward(g, lam, out, h0, reverse, [True, True, True])
            want = torch.autograd.grad(
                scan_loop(lam.requires_grad_(), x.requires_grad_(), h0.requires_grad_(), reverse), (lam, x, h0), g
            )
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
            lam.requires_grad_(False), x.requires_grad_(False), h0.requires_grad_(False)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_long_sequence_near_unit_modulus(device, dtype):
    """L = 65,536 with |lam| close to 1: the state integrates thousands of steps."""
    lam, x, h0 = make_inputs(1, 65_536, 2, dtype, device, r_min=0.9999, r_max=0.99999, seed=7)
    for reverse in (False, True):
        out = torch_lru.scan(lam, x, h0, reverse)
        ref = reference(lam, x, h0, reverse)
        scale = ref.abs().max().item()
        err = (out.cpu().to(ref.dtype) - ref).abs().max().item()
        assert err <= 1e-4 * scale, (err, scale)


def test_non_contiguous_inputs(device):
    g = torch.Generator().manual_seed(3)
    B, L, N = 3, 50, 20
    base_x = torch.randn(B, N, 2 * L, dtype=torch.complex128, generator=g).to(device)
    x = base_x.transpose(1, 2)[:, ::2]  # (B, L, N) with strides (., 2, 2L)
    lam_v = make_lam((2 * N,), torch.complex128, device, generator=g)[::2]
    lam_s = make_lam((B, N, L), torch.complex128, device, generator=g).transpose(1, 2)
    h0 = torch.randn(N, B, dtype=torch.complex128, generator=g).to(device).t()
    assert not x.is_contiguous() and not lam_v.is_contiguous() and not lam_s.is_contiguous()
    for lam in (lam_v, lam_s):
        for reverse in (False, True):
            out = torch_lru.scan(lam, x, h0, reverse)
            want = torch_lru.scan(lam.contiguous(), x.contiguous(), h0.contiguous(), reverse)
            assert_same_result(out, want)
            assert_close_to_reference(out, reference(lam, x, h0, reverse), torch.complex128)


@pytest.mark.parametrize("per_step", [False, True])
def test_out_variant(device, per_step):
    for B, L, N in [(2, 300, 7), (1, 20_000, 1)]:
        lam, x, h0 = make_inputs(B, L, N, torch.complex64, device, per_step, seed=L)
        for bitwise in (False, True):  # bitwise in deterministic mode, on every device
            with deterministic_algorithms() if bitwise else contextlib.nullcontext():
                want = torch_lru.scan(lam, x, h0)
                out = torch.full_like(x, float("nan"))
                assert torch_lru.scan(lam, x, h0, out=out) is out
                assert_same_result(out, want)
                inplace = x.clone()  # out may be x itself
                torch_lru.scan(lam, inplace, h0, out=inplace)
                assert_same_result(inplace, want)
    B, L, N = 2, 5, 3
    lam, x, _ = make_inputs(B, L, N, torch.complex64, device, per_step)
    with pytest.raises(RuntimeError, match="out must have x's shape"):
        torch_lru.scan(lam, x, out=torch.empty(B, L + 1, N, dtype=x.dtype, device=device))
    with pytest.raises(RuntimeError, match="out and x must have the same dtype"):
        torch_lru.scan(lam, x, out=torch.empty(B, L, N, device=device))
    with pytest.raises(RuntimeError, match="does not support automatic differentiation"):
        torch_lru.scan(lam.clone().requires_grad_(), x, out=torch.empty_like(x))
    with torch.no_grad():
        torch_lru.scan(lam.clone().requires_grad_(), x, out=torch.empty_like(x))
    with pytest.raises(RuntimeError, match="out must be contiguous"):
        torch_lru.scan(lam, x, out=torch.empty(B, N, L, dtype=x.dtype, device=device).transpose(1, 2))


@pytest.mark.parametrize("per_step", [False, True])
def test_out_may_be_x_but_share_no_other_memory(device, per_step):
    B, L, N = 2, 6, 3
    lam, x, h0 = make_inputs(B, L, N, torch.complex64, device, per_step, seed=3)
    want = torch_lru.scan(lam, x, h0)
    alias = x.clone().view(B * L * N).view(B, L, N)  # x itself under another view: allowed
    torch.testing.assert_close(torch_lru.scan(lam, alias, h0, out=alias.view(B, L, N)), want)
    flat = torch.zeros(B * L * N + N, dtype=x.dtype, device=device)
    shifted_x, out = flat[N:].view(B, L, N), flat[:-N].view(B, L, N)
    shifted_x.copy_(x)
    with pytest.raises(RuntimeError, match=r"torch_lru::scan.out: out overlaps x in part"):
        torch_lru.scan(lam, shifted_x, h0, out=out)
    buf = torch.zeros(B, L, N, dtype=x.dtype, device=device)
    lam_in_out = buf[0, 0] if not per_step else buf
    lam_in_out.copy_(lam if not per_step else lam)
    with pytest.raises(RuntimeError, match=r"torch_lru::scan.out: lam shares memory with out"):
        torch_lru.scan(lam_in_out, x, h0, out=buf)
    buf[:, 0].copy_(h0)
    with pytest.raises(RuntimeError, match=r"torch_lru::scan.out: h0 shares memory with out"):
        torch_lru.scan(lam, x, buf[:, 0], out=buf)
    # The functional op names itself, the out= overload itself.
    with pytest.raises(RuntimeError, match=r"torch_lru::scan: lam of shape"):
        torch_lru.scan(torch.ones(N + 1, dtype=x.dtype, device=device), x)
    with pytest.raises(RuntimeError, match=r"torch_lru::scan.out: lam of shape"):
        torch_lru.scan(torch.ones(N + 1, dtype=x.dtype, device=device), x, out=torch.empty_like(x))


def test_out_variant_under_torch_compile(device):
    torch._dynamo.reset()

    def f(lam, x, out):
        torch_lru.scan(lam, x, out=out)
        return out.real * 2

    lam, x, _ = make_inputs(2, 16, 4, torch.complex64, device, seed=5)
    compiled = torch.compile(f, fullgraph=True)
    out = torch.empty_like(x)
    torch.testing.assert_close(compiled(lam, x, out), torch_lru.scan(lam, x).real * 2)
    torch.testing.assert_close(out, torch_lru.scan(lam, x))
    inplace = x.clone()
    torch.compile(lambda lam, x: torch_lru.scan(lam, x, out=x), fullgraph=True)(lam, inplace)
    torch.testing.assert_close(inplace, torch_lru.scan(lam, x))
    with pytest.raises(Exception, match="out must be contiguous with x's shape"):
        compiled(lam, x, torch.empty(1, 16, 4, dtype=x.dtype, device=device))


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
@pytest.mark.parametrize("per_step", [False, True])
def test_empty(device, shape, per_step):
    B, L, N = shape
    x = torch.randn(shape, dtype=torch.complex64, device=device, requires_grad=True)
    lam = torch.rand(shape if per_step else (N,), device=device).to(torch.complex64).requires_grad_()
    h0 = torch.randn(B, N, dtype=torch.complex64, device=device, requires_grad=True)
    out = torch_lru.scan(lam, x, h0)
    assert out.shape == shape
    out.sum().abs().backward()
    for t in (lam, x, h0):
        assert t.grad is not None and t.grad.shape == t.shape and not t.grad.abs().sum()


@pytest.mark.parametrize("per_step", [False, True])
def test_deterministic(device, per_step):
    # The CUDA look-back may meet a predecessor's aggregate or its end state, which rounds
    # differently; torch.use_deterministic_algorithms(True) makes every carry come the same way.
    lam, x, h0 = make_inputs(4, 3000, 40, torch.complex64, device, per_step, seed=11)
    for t in (lam, x, h0):
        t.requires_grad_()
    runs = []
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(3):
            out = torch_lru.scan(lam, x, h0)
            runs.append((out, *torch.autograd.grad(out.abs().sum(), (lam, x, h0))))
    finally:
        torch.use_deterministic_algorithms(was)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    assert_close_to_reference(runs[0][0], reference(lam.detach(), x.detach(), h0.detach(), False), torch.complex64)


# ---------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_gradcheck(device, dtype, per_step, reverse, with_h0):
    lam, x, h0 = make_inputs(2, 9, 3, dtype, device, per_step, with_h0, seed=5)
    inputs = [t.requires_grad_() for t in (lam, x, h0) if t is not None]

    def fn(lam, x, *rest):
        return torch_lru.scan(lam, x, rest[0] if rest else None, reverse)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_backward_matches_autograd_of_reference(device, dtype, per_step, reverse):
    lam, x, h0 = make_inputs(3, 200, 37, dtype, device, per_step, seed=9)
    g = torch.randn(x.shape, dtype=dtype, device=device)
    ours = torch.autograd.grad(torch_lru.scan(*(t.requires_grad_() for t in (lam, x, h0)), reverse), (lam, x, h0), g)
    wide = [t.detach().cpu().to(WIDE[dtype]).requires_grad_() for t in (lam, x, h0)]
    want = torch.autograd.grad(scan_loop(*wide, reverse), wide, g.cpu().to(WIDE[dtype]))
    for a, b in zip(ours, want):
        scale = max(b.abs().max().item(), 1.0)
        tol = (1e-4 if dtype in (torch.float32, torch.complex64) else 1e-11) * scale
        torch.testing.assert_close(a.cpu().to(b.dtype), b, rtol=0, atol=tol)


# Each CPU kernel build (csrc/ops/scan_cpu_isa_*.cpp), chosen with TORCH_LRU_CPU_ISA in a fresh
# process (the choice is read once), computes the cases below; the parent checks them against the
# float64 loop. A build the processor cannot run falls back to the widest one it can.
ISA_CASES = [  # (B, L, N, dtype): odd widths, rows walked up and down, L split on two threads
    (2, 300, 37, torch.complex64),
    (1, 3000, 8, torch.complex64),
    (3, 50, 300, torch.float32),
    (2, 77, 19, torch.complex128),
    (2, 40, 600, torch.complex64),  # whole rows over a page, walked down when descending
    # past the caches, rows of about a page: whole and split along L in one chunk per thread, or
    # (lam per step, no grad_lam) shared in halves, a few steps at a time
    (1, 1500, 1100, torch.float32),
    (1, 2100, 70, torch.complex64),  # in the caches, over a megabyte: L split, the first chunk longer
    (1, 703, 1100, torch.complex64),  # 6.2 MB, rows of 8.8 KB shared by two threads: tiles of steps
]
ISA_SCRIPT = """
import sys, torch, torch_lru
torch.set_num_threads(2)
cases, out = torch.load(sys.argv[1]), []
for lam, x, h0, g, reverse in cases:
    h = torch_lru.scan(lam, x, h0, reverse)
    grads = torch.ops.torch_lru.scan_backward(g, lam, h, h0, reverse, [True, True, True])
    grad_x_alone = torch.ops.torch_lru.scan_backward(g, lam, h, h0, reverse, [False, True, False])[1]
    out.append((h, *grads, grad_x_alone))
torch.save(out, sys.argv[2])
"""


def run_in_build(isa, script, cases, tmp_path, *args):
    """Runs `script` in a process capped to one kernel build, its arguments the file of `cases`, then `args`."""
    import subprocess
    import sys

    torch.save(cases, tmp_path / "cases.pt")
    env = dict(os.environ, TORCH_LRU_CPU_ISA=isa)
    command = [sys.executable, "-c", script, str(tmp_path / "cases.pt"), *map(str, args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_every_cpu_kernel_build(isa, tmp_path):
    cases = []
    for k, (B, L, N, dtype) in enumerate(ISA_CASES):
        for per_step in (False, True):
            for reverse in (False, True):
                lam, x, h0 = make_inputs(B, L, N, dtype, "cpu", per_step, seed=k)
                cases.append((lam, x, h0, torch.randn(x.shape, dtype=dtype), reverse))
    run_in_build(isa, ISA_SCRIPT, cases, tmp_path, tmp_path / "out.pt")
    for (lam, x, h0, g, reverse), got in zip(cases, torch.load(tmp_path / "out.pt")):
        assert_close_to_reference(got[0], reference(lam, x, h0, reverse), x.dtype)
        wide = [t.to(WIDE[x.dtype]).requires_grad_() for t in (lam, x, h0)]
        want = torch.autograd.grad(scan_loop(*wide, reverse), wide, g.to(WIDE[x.dtype]))
        for a, b in zip(got[1:], (*want, want[1])):  # grad_lam, grad_x, grad_h0, grad_x alone
            scale = max(b.abs().max().item(), 1.0)
            tol = (1e-4 if x.dtype in (torch.float32, torch.complex64) else 1e-11) * scale
            torch.testing.assert_close(a.to(b.dtype), b, rtol=0, atol=tol)


# Outputs past the caches (over 16 MB) are written with streaming stores when their rows fall on
# vector boundaries (csrc/ops/scan_cpu_kernels.h, Row::streams). Each build computes large cases
# twice: into fresh (aligned) outputs, and with every output one element off a vector boundary,
# which takes ordinary stores; the two must agree bitwise (only the stores differ). The backward has
# no out=, so its streamed outputs are checked against the same math written with the forward op
# into a misaligned output (the adjoint is a scan in the other direction) and elementwise ops.
STREAM_CASES = [  # (B, L, N, dtype): L split on two threads; whole rows; rows not on vector boundaries
    (1, 1 << 16, 64, torch.complex64),
    (2, 4096, 320, torch.complex64),
    (1, 1 << 15, 64, torch.complex128),
    (2, 30000, 37, torch.complex64),
    (1, 1 << 17, 64, torch.float32),  # the real rows (the RG-LRU's) take the same stores
    (2, 8192, 320, torch.float32),
    (1, 4100, 600, torch.float32),  # 9.8 MB: streamed, and L split one chunk per thread
    (1, 1201, 1024, torch.complex64),  # 9.8 MB: streamed, rows of 8 KB shared in pages, tiles of steps
    (1, 4203, 1030, torch.float32),  # 17 MB, rows of 4 KB shared in halves, the second half unaligned
]
STREAM_SCRIPT = """
import sys, torch, torch_lru
torch.set_num_threads(2)

def off_boundary(like):  # a contiguous tensor one element past a 64-byte boundary
    return torch.empty(like.numel() + 1, dtype=like.dtype)[1:].view(like.shape)

def close(a, b, what):
    err = (a - b).abs().max().item() / max(b.abs().max().item(), 1.0)
    assert err < 1e-4, (what, err)

for B, L, N, dtype, per_step, reverse in torch.load(sys.argv[1]):
    case = (B, L, N, dtype, per_step, reverse)
    g = torch.Generator().manual_seed(L + N)
    x = torch.randn(B, L, N, dtype=dtype, generator=g)
    shape = (B, L, N) if per_step else (N,)
    mod = 0.5 + 0.5 * torch.rand(shape, dtype=torch.float64, generator=g)
    lam = (torch.polar(mod, torch.rand(shape, dtype=torch.float64, generator=g)) if dtype.is_complex else mod).to(dtype)
    h = torch_lru.scan(lam, x, None, reverse)
    assert h.data_ptr() % 64 == 0
    assert torch.equal(h, torch_lru.scan(lam, x, None, reverse, out=off_boundary(x))), case
    gy = torch.randn(B, L, N, dtype=dtype, generator=g)
    glam, gx, _ = torch.ops.torch_lru.scan_backward(gy, lam, h, None, reverse, [True, True, False])
    t = 2 if reverse else 1  # the time axis runs towards the start when reverse
    if per_step:  # d_k = g_k + conj(a_{k+1}) d_{k+1}, k counted in the scan's direction
        coef = torch.zeros_like(lam)
        if reverse:
            coef[:, 1:] = lam[:, :-1].conj()
        else:
            coef[:, :-1] = lam[:, 1:].conj()
    else:
        coef = lam.conj()
    want_gx = torch_lru.scan(coef, gy, None, not reverse, out=off_boundary(x))
    close(gx, want_gx, ("grad_x",) + case)
    h_prev = torch.zeros_like(h)  # h one step earlier in the scan's direction (h0 = 0)
    if reverse:
        h_prev[:, :-1] = h[:, 1:]
    else:
        h_prev[:, 1:] = h[:, :-1]
    want_glam = h_prev.conj() * gx
    close(glam, want_glam if per_step else want_glam.sum((0, 1)), ("grad_lam",) + case)
"""


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_streaming_stores_every_cpu_kernel_build(isa, tmp_path):
    cases = [c + (p, r) for c in STREAM_CASES for p in (False, True) for r in (False, True)]
    run_in_build(isa, STREAM_SCRIPT, cases, tmp_path)


# Tensors that stay in the caches (up to 4 MB) take their steps a tile at a time, with each part of
# the row held in registers through the tile (Row::steps_with, lam constant; Row::steps_out, lam
# per step); larger ones with whole rows take one step at a time, a vector at a time
# (Row::step_out_with, Row::step_out), in separate code. Each channel's arithmetic is the same
# either way, so a small case must give the same bits as the same rows inside a batch too large to
# be tiled (its other rows zero, which adds exact zeros to grad_lam). Rows with whole register
# groups, a rest and a partial vector; h0, whose step is taken on its own in the backward; both
# directions; lam constant and per step; the real loops too.
TILE_CASES = [
    (300, 70, torch.complex64),
    (3000, 5, torch.complex64),
    (200, 70, torch.complex128),
    (500, 64, torch.complex64),
    (400, 33, torch.float32),
    (300, 100, torch.float32),  # real rows: whole register groups, a rest and a partial vector
    (200, 40, torch.float64),
]
TILE_SCRIPT = """
import sys, torch, torch_lru
torch.set_num_threads(2)
for L, N, dtype in torch.load(sys.argv[1]):
    g = torch.Generator().manual_seed(L + N)
    real = not dtype.is_complex
    big_b = 4 * 2**20 // (L * N * torch.empty((), dtype=dtype).element_size()) + 2
    x, gy = (torch.zeros(big_b, L, N, dtype=dtype) for _ in range(2))
    h0 = torch.zeros(big_b, N, dtype=dtype)
    for t in (x, gy, h0):
        t[0] = torch.randn(t.shape[1:], dtype=dtype, generator=g)
    for per_step, reverse in [(p, r) for p in (False, True) for r in (False, True)]:
        case = (L, N, dtype, per_step, reverse)
        shape = (big_b, L, N) if per_step else (N,)
        mod = 0.5 + 0.5 * torch.rand(shape, dtype=torch.float64, generator=g)
        lam = (mod if real else torch.polar(mod, torch.rand(shape, dtype=torch.float64, generator=g))).to(dtype)
        small = [t[:1].clone() for t in (x, gy, h0)]
        lam_small = lam[:1].clone() if per_step else lam
        h = torch_lru.scan(lam, x, h0, reverse)
        grads = torch.ops.torch_lru.scan_backward(gy, lam, h, h0, reverse, [True, True, True])
        # One thread, so that the small B=1 problem is never split along L: its chunks' carries
        # would round differently from one pass over the steps.
        torch.set_num_threads(1)
        h_small = torch_lru.scan(lam_small, small[0], small[2], reverse)
        assert torch.equal(h_small, h[:1]), ("h",) + case
        mask = [True, True, True]
        grads_small = torch.ops.torch_lru.scan_backward(small[1], lam_small, h_small, small[2], reverse, mask)
        torch.set_num_threads(2)
        for name, a, b in zip(("grad_lam", "grad_x", "grad_h0"), grads_small, grads):
            assert torch.equal(a, b if name == "grad_lam" and not per_step else b[:1]), (name,) + case
"""


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_register_tiles_agree_bitwise_with_one_step_at_a_time(isa, tmp_path):
    run_in_build(isa, TILE_SCRIPT, TILE_CASES, tmp_path)


def test_unknown_cpu_kernel_build_is_refused():
    import subprocess
    import sys

    code = "import torch, torch_lru; torch_lru.scan(torch.ones(2), torch.ones(1, 3, 2))"
    env = dict(os.environ, TORCH_LRU_CPU_ISA="sse9")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "TORCH_LRU_CPU_ISA must be baseline, avx2 or avx512, got 'sse9'" in done.stderr


@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_fused_and_differentiable_backward_agree(device, per_step, reverse):
    """create_graph=True takes the composite (differentiable) backward; it must equal the kernel."""
    lam, x, h0 = make_inputs(2, 300, 19, torch.complex128, device, per_step, seed=13)
    inputs = [t.requires_grad_() for t in (lam, x, h0)]
    g = torch.randn(x.shape, dtype=x.dtype, device=device)
    fused = torch.autograd.grad(torch_lru.scan(*inputs, reverse), inputs, g)
    composite = torch.autograd.grad(torch_lru.scan(*inputs, reverse), inputs, g, create_graph=True)
    for a, b in zip(fused, composite):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)


def test_gradient_only_where_needed(device):
    lam, x, h0 = make_inputs(2, 10, 3, torch.complex64, device)
    x.requires_grad_()
    out = torch_lru.scan(lam, x, h0)
    (gx,) = torch.autograd.grad(out.abs().sum(), x)
    assert gx.shape == x.shape and lam.grad is None and h0.grad is None


def test_graph_recorded_only_where_a_gradient_is_wanted(device):
    """Without an input that needs a gradient (or under no_grad) the op records no graph and
    returns the same values; with one, it records the graph and the gradient flows; forward-mode
    tangents are refused, not dropped."""
    lam, x, h0 = make_inputs(2, 10, 3, torch.complex64, device, per_step=True)
    plain = torch_lru.scan(lam, x, h0)
    assert plain.grad_fn is None and not plain.requires_grad
    h0.requires_grad_()
    with torch.no_grad():
        quiet = torch_lru.scan(lam, x, h0)
    assert quiet.grad_fn is None and not quiet.requires_grad
    tracked = torch_lru.scan(lam, x, h0)
    assert tracked.grad_fn is not None
    # CUDA's look-back may differ in the last bits from run to run: exact on the CPU only
    exact = {"rtol": 0, "atol": 0} if plain.device.type == "cpu" else {}
    torch.testing.assert_close(plain, quiet, **exact)
    torch.testing.assert_close(plain, tracked.detach(), **exact)
    (gh0,) = torch.autograd.grad(tracked.abs().sum(), h0)
    assert gh0.shape == h0.shape
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(RuntimeError, match="jvp is not implemented"):
            torch_lru.scan(lam, dual)
        with pytest.raises(RuntimeError, match="forward-mode tangent"):
            torch_lru.scan(lam, dual, out=torch.empty_like(x))


def test_scan_backward_output_mask(device):
    lam, x, h0 = make_inputs(2, 10, 3, torch.complex64, device)
    h = torch_lru.scan(lam, x, h0)
    glam, gx, gh0 = torch.ops.torch_lru.scan_backward(torch.ones_like(h), lam, h, h0, False, [False, True, False])
    assert glam is None and gh0 is None and gx.shape == x.shape


# ---------------------------------------------------------------------------------------------
# PyTorch integration: opcheck, torch.compile, torch.export


def opcheck_samples(device):
    for dtype in (torch.float32, torch.complex64):
        for per_step in (False, True):
            for reverse in (False, True):
                for grad in (False, True):
                    lam, x, h0 = make_inputs(2, 6, 3, dtype, device, per_step, seed=1)
                    if grad:
                        lam.requires_grad_(), x.requires_grad_(), h0.requires_grad_()
                    yield (lam, x, h0, reverse)
                    yield (lam, x, None, reverse)


def test_opcheck_scan(device):
    for args in opcheck_samples(device):
        torch.library.opcheck(torch.ops.torch_lru.scan.default, args)


def test_opcheck_scan_backward(device):
    for lam, x, h0, reverse in opcheck_samples(device):
        lam, x = lam.detach(), x.detach()
        h0 = None if h0 is None else h0.detach()
        h = torch_lru.scan(lam, x, h0, reverse)
        mask = [True, True, h0 is not None]
        torch.library.opcheck(
            torch.ops.torch_lru.scan_backward.default, (torch.randn_like(h), lam, h, h0, reverse, mask)
        )


def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def f(lam, x, h0):
        h = torch_lru.scan(lam, x, h0) + torch_lru.scan(lam, x, reverse=True)
        return (h.real * 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    lam, x, h0 = make_inputs(2, 16, 4, torch.complex64, device, seed=2)
    inputs = [t.requires_grad_() for t in (lam, x, h0)]
    want_loss = f(*inputs)
    want = torch.autograd.grad(want_loss, inputs)
    got_loss = compiled(*inputs)
    got = torch.autograd.grad(got_loss, inputs)
    torch.testing.assert_close(got_loss, want_loss)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_torch_compile_inductor_real(device):
    torch._dynamo.reset()

    def f(lam, x):
        return torch.sigmoid(torch_lru.scan(torch.sigmoid(lam), x * 2.0)).sum()

    lam, x, _ = make_inputs(3, 40, 8, torch.float32, device, seed=4)
    x.requires_grad_()
    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    torch.testing.assert_close(compiled(lam, x), f(lam, x))
    torch.testing.assert_close(torch.autograd.grad(compiled(lam, x), x)[0], torch.autograd.grad(f(lam, x), x)[0])


def test_torch_export(device):
    class M(torch.nn.Module):
        def forward(self, lam, x):
            return torch_lru.scan(lam, x)

    lam, x, _ = make_inputs(2, 8, 3, torch.float32, device)
    ep = torch.export.export(M(), (lam, x))
    assert any("torch_lru.scan" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(lam, x), torch_lru.scan(lam, x))


# ---------------------------------------------------------------------------------------------
# Bad input: a RuntimeError that says what is wrong


def bad_inputs(device):
    c64 = dict(dtype=torch.complex64, device=device)
    x = torch.randn(2, 5, 3, **c64)
    lam = torch.rand(3, device=device).to(torch.complex64)
    yield "x must have shape", (lam, torch.randn(5, 3, **c64), None)
    yield "x must have shape", (lam, torch.randn(1, 2, 5, 3, **c64), None)
    yield "lam of shape \\(N,\\) must match", (torch.rand(4, device=device).to(torch.complex64), x, None)
    yield "lam must have shape", (torch.rand(2, 5, **c64), x, None)
    yield "lam of shape \\(B, L, N\\) must match", (torch.rand(2, 4, 3, **c64), x, None)
    yield "h0 must have shape", (lam, x, torch.randn(3, 3, **c64))
    yield "h0 must have shape", (lam, x, torch.randn(2, 1, 3, **c64))
    yield "lam and x must have the same dtype", (lam.to(torch.complex128), x, None)
    yield "h0 and x must have the same dtype", (lam, x, torch.randn(2, 3, device=device))
    yield "unsupported dtype", (lam.real.half(), x.real.half(), None)
    yield "unsupported dtype", (lam.real.long(), x.real.long(), None)
    # Mixed devices: with no second real device, a meta tensor stands in for one.
    yield "lam and x must be on the same device", (lam.to("meta"), x, None)
    yield "h0 and x must be on the same device", (lam, x, torch.zeros(2, 3, dtype=torch.complex64, device="meta"))
    if device != "cpu":
        yield "lam and x must be on the same device", (lam.cpu(), x, None)
        yield "h0 and x must be on the same device", (lam, x, torch.zeros(2, 3, dtype=torch.complex64))


def test_bad_inputs_raise_clear_errors(device):
    for message, (lam, x, h0) in bad_inputs(device):
        with pytest.raises(RuntimeError, match=message):
            torch_lru.scan(lam, x, h0)
        if "device" in message:
            continue  # all on meta, the devices agree
        with pytest.raises(RuntimeError, match=message):  # the same check guards shape inference
            torch.ops.torch_lru.scan(lam.to("meta"), x.to("meta"), None if h0 is None else h0.to("meta"))


def test_bad_backward_inputs(device):
    lam, x, h0 = make_inputs(2, 5, 3, torch.complex64, device)
    h = torch_lru.scan(lam, x, h0)
    with pytest.raises(RuntimeError, match="grad_h must match h"):
        torch.ops.torch_lru.scan_backward(h[:, :4], lam, h, h0, False, [True, True, True])
    with pytest.raises(RuntimeError, match="grad_h and h must have the same dtype"):
        torch.ops.torch_lru.scan_backward(h.real, lam, h, h0, False, [True, True, True])


# ---------------------------------------------------------------------------------------------
# CUDA against the CPU reference kernels (skipped without a GPU)


def poison_cuda_cache(nbytes=1 << 28):
    """Fill and free a large block so that fresh CUDA allocations start as NaN, not zero: an output
    element a kernel fails to write then shows up in the comparison."""
    torch.full((nbytes // 4,), float("nan"), device="cuda")
    torch.cuda.synchronize()


def check_cuda_against_cpu(lam, x, h0, g, reverse, label, stream=None):
    """The op on CUDA (forward and backward) against the CPU kernels on the same inputs."""
    dtype, (B, L, _) = x.dtype, x.shape
    want_h = torch_lru.scan(lam, x, h0, reverse)
    want = torch.ops.torch_lru.scan_backward(g, lam, want_h, h0, reverse, [True, True, True])
    with torch.cuda.stream(stream or torch.cuda.current_stream()):
        dev = [t.to("cuda", non_blocking=True) for t in (lam, x, h0, g)]
        got_h = torch_lru.scan(dev[0], dev[1], dev[2], reverse)
        got = torch.ops.torch_lru.scan_backward(dev[3], dev[0], got_h, dev[2], reverse, [True, True, True])
        got = [t.cpu() for t in (got_h, *got)]
    single = dtype in (torch.float32, torch.complex64)
    for i, (a, b) in enumerate(zip(got, (want_h, *want))):
        assert not a.isnan().any(), f"unwritten output ({label})"
        scale = max(b.abs().max().item(), 1.0)
        tol = (1e-4 if single else 1e-11) * scale
        if i == 1 and lam.dim() == 1:  # a sum over B x L, in another order than the CPU's
            tol *= max(1.0, (B * L / 4096) ** 0.5)
        torch.testing.assert_close(a, b, rtol=0, atol=tol, msg=f"{label}, output {i}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_cuda_matches_cpu(cuda, dtype, per_step, reverse):
    for B, L, N in [(1, 1, 1), (3, 1000, 5), (2, 4097, 130), (1, 70_000, 2), (1, 1 << 22, 1), (2, 300, 4096)]:
        lam, x, h0 = make_inputs(B, L, N, dtype, "cpu", per_step, seed=B * L + N)
        g = torch.randn(B, L, N, generator=torch.Generator().manual_seed(L), dtype=WIDE[dtype]).to(dtype)
        poison_cuda_cache()
        check_cuda_against_cpu(lam, x, h0, g, reverse, f"(B, L, N) = {(B, L, N)}")


@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_repeats_agree_with_cpu(cuda, deterministic):
    """200 runs of shapes whose look-back meets every kind of predecessor: a race shows as a run
    that differs."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        for B, L, N in [(1, 20_000, 1), (3, 257, 33)]:
            lam, x, h0 = make_inputs(B, L, N, torch.complex64, "cpu", per_step=False, seed=L)
            g = torch.randn(B, L, N, generator=torch.Generator().manual_seed(1), dtype=torch.complex128)
            g = g.to(torch.complex64)
            for repeat in range(200):
                check_cuda_against_cpu(lam, x, h0, g, repeat % 2 == 1, f"(B, L, N) = {(B, L, N)}, run {repeat}")
    finally:
        torch.use_deterministic_algorithms(was)


def test_cuda_two_streams_at_once(cuda):
    """Scans of two sizes on two streams, launched before either is waited for."""
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    cases = []
    for i, (B, L, N) in enumerate([(2, 50_000, 3), (8, 2048, 256)]):
        lam, x, h0 = make_inputs(B, L, N, torch.complex64, "cpu", per_step=i == 0, seed=i)
        cases.append([t.to("cuda") for t in (lam, x, h0)] + [(lam, x, h0)])
    torch.cuda.synchronize()
    outs = []
    for stream, (lam, x, h0, _) in zip(streams, cases):
        with torch.cuda.stream(stream):
            outs.append([torch_lru.scan(lam, x, h0) for _ in range(5)])
    torch.cuda.synchronize()
    for runs, (*_, cpu_inputs) in zip(outs, cases):
        want = reference(*cpu_inputs, False)
        for h in runs:
            assert_close_to_reference(h, want, torch.complex64)


def test_cuda_long_single_chain_finishes(cuda):
    """One chain of 2^22 steps, complex128 with per-step lam, in both modes, in a process whose
    look-back may wait 10 s at most: a stall fails in seconds, not at the test run's limit."""
    import subprocess
    import sys

    code = """
import torch, torch_lru
for det in (False, True):
    torch.use_deterministic_algorithms(det)
    g = torch.Generator().manual_seed(0)
    L = 1 << 22
    lam = torch.polar(0.999 + 0.0009 * torch.rand(1, L, 1, generator=g, dtype=torch.float64),
                      torch.rand(1, L, 1, generator=g, dtype=torch.float64))
    x = torch.randn(1, L, 1, generator=g, dtype=torch.complex128)
    want = torch_lru.scan(lam, x)
    got = torch_lru.scan(lam.cuda(), x.cuda())
    grads = torch.ops.torch_lru.scan_backward(got, lam.cuda(), got, None, False, [True, True, False])
    torch.cuda.synchronize()
    assert (got.cpu() - want).abs().max() <= 1e-9 * want.abs().max(), det
print("done")
"""
    env = dict(os.environ, TORCH_LRU_SCAN_TIMEOUT_MS="10000")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "done" in done.stdout, done.stdout + done.stderr
