"""Benchmark of the scan op against the memory-bound floor (a copy of the same bytes) and a plain
PyTorch loop over t, forward and forward+backward, complex64 with time-invariant lam (the LRU).

Like is timed with like: "alloc" rows allocate their output on every call (scan vs x.clone()),
"reuse" rows write into memory allocated once (scan(..., out=h) vs h.copy_(x)). Bandwidth counts
the fewest bytes each pass must move: forward reads x and writes h; backward reads grad_h and h and
writes grad_x (the per-channel grad_lam is negligible).

The backward is timed against its memory floor: an elementwise op that moves the same bytes with
as many input and output streams, timed beside it, both allocating their outputs (like with like:
both pay the same page faults): grad_x alone (grad_h in, grad_x out) against -g; grad_x and
grad_lam against g + h (time-invariant lam: grad_lam is (N,)); with lam per step (B, L, N), lam is
one more input and grad_lam one more output: g * lam, and addcmul(g, h, lam) plus one more
written tensor. "ratio" is floor time over op time (1 = at the floor). The same table follows for
float32 (real rows: the RG-LRU's scan, whose lam is per step), with the forward beside it (against
x * lam, which moves its three tensors, for lam per step). The in-cache rate is ns per
element on one thread, every tensor in L2 (B=8, L=64, N=64), for the forward and each backward,
call included; beside it the fixed cost of each call (one step of 8 channels).

Peers, each timed on inputs prepared once (the friendliest terms for them) and checked against the
op before it is timed: jax.lax.associative_scan with the LRU's binary operator under jax.jit (the
paper's and S5's method; skipped where JAX is absent), torch's associative_scan under torch.compile
(combine_mode="pointwise", on real and imaginary parts since Triton has no complex type; GPU only),
and an FFT convolution with the kernel lam^k (time-invariant lam only). "speed-up vs P" is P's time
over the op's, forward and forward+backward.

    scripts/python scripts/bench_scan.py [--device cpu|cuda] [--quick] [--peers jax,torch_assoc,fft]
        [--no-loop] [--no-backward] [--heap warm|cold] [--plot PATH] [--json PATH]

--heap warm (the default) restarts the script with glibc told to keep freed memory
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), and each timed call is first repeated until one
takes no page faults (scripts/bench_timing.py), so that allocating calls reuse pages already
faulted in; --heap cold keeps glibc's defaults, under which every output of these sizes is a
fresh mmap whose page faults cost more than the kernels (the "alloc" rows then time mostly them).
"""

import argparse
import json
import os
import sys
from typing import Callable, NamedTuple, Optional

import torch
from bench_timing import heap_is_warm, median_seconds, warm_heap

import torch_lru
from torch_lru.reference import scan_loop

CPU_SIZES = [(8, 4096, 256), (8, 8192, 256), (1, 2**20, 64), (1, 4096, 64), (1, 4096, 1024)]
CUDA_SIZES = [(32, 8192, 512), (1, 2**20, 256), (64, 1024, 256)]
LOOP_MAX_L = 8192  # the Python loop is too slow to time beyond this


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- peers: each returns a Peer of callables on inputs prepared once ----


class Peer(NamedTuple):
    forward: Callable[[], object]  # what is timed
    fwd_bwd: Optional[Callable[[], object]]  # None where the peer has no backward
    h: Callable[[], torch.Tensor]  # its output as a complex torch tensor, for the check


class Skip(Exception):
    pass


def peer_fft(lam, x, g):
    """h = x conv lam^k along L, by FFTs of length 2L."""
    L = x.shape[1]
    powers = torch.arange(L, device=x.device, dtype=torch.float32).unsqueeze(1)

    def conv(kernel, x_):
        spec = torch.fft.fft(x_, n=2 * L, dim=1) * torch.fft.fft(kernel, n=2 * L, dim=0)
        return torch.fft.ifft(spec, dim=1)[:, :L]

    kernel = lam.unsqueeze(0) ** powers  # prepared once for the forward; the backward needs it from lam
    lam_r, x_r = lam.clone().requires_grad_(), x.clone().requires_grad_()

    def fwd_bwd():
        torch.autograd.grad(conv(lam_r.unsqueeze(0) ** powers, x_r), (lam_r, x_r), g)

    return Peer(lambda: conv(kernel, x), fwd_bwd, lambda: conv(kernel, x))


def peer_torch_assoc(lam, x, g):
    if x.device.type != "cuda":
        raise Skip("combine_mode='pointwise' needs Triton on a GPU")
    from torch._higher_order_ops.associative_scan import associative_scan

    def combine(first, second):  # (a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2), on (re, im) parts
        ar, ai, br, bi = first
        cr, ci, dr, di = second
        return cr * ar - ci * ai, cr * ai + ci * ar, cr * br - ci * bi + dr, cr * bi + ci * br + di

    @torch.compile(fullgraph=True, dynamic=False)
    def run(ar, ai, br, bi):
        return associative_scan(combine, (ar, ai, br, bi), dim=1, combine_mode="pointwise")[2:]

    a = lam.expand_as(x)
    parts = [t.contiguous() for t in (a.real, a.imag, x.real, x.imag)]
    forward = lambda: run(*parts)  # noqa: E731
    grads = [t.clone().requires_grad_() for t in parts]

    def fwd_bwd():
        hr, hi = run(*grads)
        torch.autograd.grad((hr, hi), grads, (g.real, g.imag))

    try:
        fwd_bwd()
    except Exception as e:  # the higher-order op's autograd is young; time the forward alone then
        log(f"  torch_assoc backward unavailable: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        fwd_bwd = None
    return Peer(forward, fwd_bwd, lambda: torch.complex(*forward()))


def peer_jax(lam, x, g):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with torch
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:
        raise Skip(f"JAX not installed ({e})") from None
    platform = "gpu" if x.device.type == "cuda" else "cpu"
    try:
        dev = jax.devices(platform)[0]
    except RuntimeError as e:
        raise Skip(f"JAX has no {platform} device ({e})") from None

    def combine(first, second):
        return second[0] * first[0], second[0] * first[1] + second[1]

    def scan(lam_, x_):
        return jax.lax.associative_scan(combine, (jnp.broadcast_to(lam_, x_.shape), x_), axis=1)[1]

    fwd = jax.jit(scan)

    @jax.jit
    def vjp(lam_, x_, g_):
        h, pull = jax.vjp(scan, lam_, x_)
        return pull(jnp.conj(g_))  # JAX's cotangent convention is torch's conjugated

    put = lambda t: jax.device_put(t.cpu().numpy(), dev)  # noqa: E731
    lam_j, x_j, g_j = put(lam), put(x), put(g)
    return Peer(
        lambda: fwd(lam_j, x_j).block_until_ready(),
        lambda: jax.block_until_ready(vjp(lam_j, x_j, g_j)),
        lambda: torch.from_numpy(jax.device_get(fwd(lam_j, x_j)).copy()),
    )


PEERS = {"jax": peer_jax, "torch_assoc": peer_torch_assoc, "fft": peer_fft}


def check_peer(got, want):
    """A peer is timed only if it computes the same h (to its own precision)."""
    got = got.to(want.device)
    err = ((got - want).abs().max() / want.abs().max().clamp_min(1)).item()
    if not err < 1e-3:
        raise Skip(f"its output differs from the op's (max relative error {err:.2e})")
    return err


def bench_size(B, L, N, device, peers=(), loop=True):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, L, N, dtype=torch.complex64, generator=gen).to(device)
    lam = torch.polar(0.9 + 0.1 * torch.rand(N, generator=gen), 6.28 * torch.rand(N, generator=gen))
    lam = lam.to(torch.complex64).to(device)
    g = torch.randn_like(x)
    out = torch.empty_like(x)
    h = torch_lru.scan(lam, x)
    elem = x.element_size()
    fwd_bytes = 2 * x.numel() * elem
    bwd_bytes = 3 * x.numel() * elem
    mask = [True, True, False]

    t = {}
    log(f"size {B}x{L}x{N}")
    calls = {
        "copy alloc": lambda: x.clone(),
        "copy reuse": lambda: out.copy_(x),
        "scan alloc": lambda: torch_lru.scan(lam, x),
        "scan reuse": lambda: torch_lru.scan(lam, x, out=out),
        "backward alloc": lambda: torch.ops.torch_lru.scan_backward(g, lam, h, None, False, mask),
    }
    for name, fn in calls.items():
        t[name] = median_seconds(fn, device, label=name)

    lam_r, x_r = lam.clone().requires_grad_(), x.clone().requires_grad_()

    def fwd_bwd(scan_fn):
        y = scan_fn(lam_r, x_r)
        torch.autograd.grad(y, (lam_r, x_r), g)

    t["scan fwd+bwd"] = median_seconds(lambda: fwd_bwd(torch_lru.scan), device, label="scan fwd+bwd")
    log(f"  op timed: {', '.join(f'{k} {v * 1e3:.1f} ms' for k, v in t.items())}")
    skipped = {}
    for name in peers:
        try:
            peer = PEERS[name](lam, x, g)
            check_peer(peer.h(), h)
            t[f"{name} fwd"] = median_seconds(peer.forward, device, label=f"{name} fwd")
            if peer.fwd_bwd is not None:
                t[f"{name} fwd+bwd"] = median_seconds(peer.fwd_bwd, device, label=f"{name} fwd+bwd")
        except Skip as e:
            skipped[name] = str(e)
            log(f"  {name}: skipped, {e}")
        except Exception as e:  # a peer that fails is reported, not fatal to the benchmark
            skipped[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            log(f"  {name}: failed, {skipped[name]}")
        if device == "cuda":
            torch.cuda.empty_cache()
    if loop and L <= LOOP_MAX_L:
        with torch.no_grad():
            t["loop fwd"] = median_seconds(lambda: scan_loop(lam, x), device, 0.2, max_reps=5, max_warmup=1)
        t["loop fwd+bwd"] = median_seconds(lambda: fwd_bwd(scan_loop), device, 0.2, max_reps=3, max_warmup=1)

    gbs = lambda secs, nbytes: nbytes / secs / 1e9  # noqa: E731
    row = {
        "size": [B, L, N],
        "ms": {k: v * 1e3 for k, v in t.items()},
        "GB/s": {
            "copy alloc": gbs(t["copy alloc"], fwd_bytes),
            "copy reuse": gbs(t["copy reuse"], fwd_bytes),
            "scan alloc": gbs(t["scan alloc"], fwd_bytes),
            "scan reuse": gbs(t["scan reuse"], fwd_bytes),
            "backward alloc": gbs(t["backward alloc"], bwd_bytes),
            "scan fwd+bwd": gbs(t["scan fwd+bwd"], fwd_bytes + bwd_bytes),
        },
        "fwd / copy (alloc)": t["copy alloc"] / t["scan alloc"],
        "fwd / copy (reuse)": t["copy reuse"] / t["scan reuse"],
    }
    for peer in ("loop", *peers):
        if f"{peer} fwd" in t:
            row[f"speed-up vs {peer} fwd"] = t[f"{peer} fwd"] / t["scan alloc"]
        if f"{peer} fwd+bwd" in t:
            row[f"speed-up vs {peer} fwd+bwd"] = t[f"{peer} fwd+bwd"] / t["scan fwd+bwd"]
    row["skipped"] = skipped
    return row


BACKWARD_CASES = {  # name: (lam per step, output_mask of scan_backward)
    "x": (False, [False, True, False]),
    "x+lam": (False, [True, True, False]),
    "x, lam/step": (True, [False, True, False]),
    "x+lam, lam/step": (True, [True, True, False]),
}


def backward_inputs(B, L, N, device, seed=0, dtype=torch.complex64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, N, dtype=dtype, generator=gen)

    def coefficients(shape):  # |lam| in [0.9, 1), any phase when complex
        mod = 0.9 + 0.1 * torch.rand(shape, generator=gen)
        return torch.polar(mod, 6.28 * torch.rand(shape, generator=gen)) if dtype.is_complex else mod.to(dtype)

    lam, lam_t = coefficients(N).to(device), coefficients((B, L, N)).to(device)
    x, g = x.to(device), torch.randn(B, L, N, dtype=dtype, generator=gen).to(device)
    return x, g, lam, lam_t, torch_lru.scan(lam, x), torch_lru.scan(lam_t, x)


def bench_backward(B, L, N, device, dtype=torch.complex64):
    """Each backward against the elementwise op that moves its bytes (both allocating); for real
    dtypes also the forward (against a clone, and with lam per step against x * lam)."""
    x, g, lam, lam_t, h, h_t = backward_inputs(B, L, N, device, dtype=dtype)
    sb = torch.ops.torch_lru.scan_backward
    row = {"size": [B, L, N]}
    if not dtype.is_complex:
        forwards = {
            "forward": (lambda: torch_lru.scan(lam, x), lambda: x.clone()),
            "forward, lam/step": (lambda: torch_lru.scan(lam_t, x), lambda: x * lam_t),
        }
        for name, (op_fn, floor_fn) in forwards.items():
            op = median_seconds(op_fn, device, label=name)
            floor = median_seconds(floor_fn, device, label=f"floor of {name}")
            row[name] = {"op ms": op * 1e3, "floor ms": floor * 1e3, "ratio": floor / op}
    floors = {
        "x": lambda: torch.neg(g),
        "x+lam": lambda: g + h,
        "x, lam/step": lambda: g * lam_t,
        "x+lam, lam/step": lambda: (torch.addcmul(g, h_t, lam_t), torch.empty_like(g).fill_(1)),
    }
    for name, (per_step, mask) in BACKWARD_CASES.items():
        a, hh = (lam_t, h_t) if per_step else (lam, h)
        op = median_seconds(lambda a=a, hh=hh, mask=mask: sb(g, a, hh, None, False, mask), device, label=name)
        floor = median_seconds(floors[name], device, label=f"floor of {name}")
        row[name] = {"op ms": op * 1e3, "floor ms": floor * 1e3, "ratio": floor / op}
    ratios = ", ".join(f"{k} {v['ratio']:.2f}" for k, v in row.items() if k != "size")
    log(f"  {dtype}, floor / op: {ratios}")
    return row


def in_cache_rates(device):
    """ns per element on one thread, everything in L2: the arithmetic's own rate, call included.

    Also the call's fixed cost (dispatch, checks, outputs, set-up), timed on one step of 8
    channels, in us: at this size it is a third or so of the call.
    """

    def calls(B, L, N):
        x, g, lam, lam_t, h, h_t = backward_inputs(B, L, N, device)
        sb = torch.ops.torch_lru.scan_backward
        out = torch.empty_like(x)
        fns = {"forward": lambda: torch_lru.scan(lam, x, out=out)}
        for name, (per_step, mask) in BACKWARD_CASES.items():
            a, hh = (lam_t, h_t) if per_step else (lam, h)
            fns[f"backward {name}"] = lambda a=a, hh=hh, mask=mask: sb(g, a, hh, None, False, mask)
        return fns

    B, L, N = 8, 64, 64
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timed = lambda f: median_seconds(f, device, min_time=0.3, max_reps=2000)  # noqa: E731
        rates = {k: timed(f) / (B * L * N) * 1e9 for k, f in calls(B, L, N).items()}
        fixed = {k: timed(f) * 1e6 for k, f in calls(1, 1, 8).items()}
        return rates, fixed
    finally:
        torch.set_num_threads(threads)


def print_backward_table(rows, rates, fixed, title="complex64"):
    names = [n for n in rows[0] if n != "size"]
    print(
        f"\n{title}: backward against its floor (an elementwise op over the same bytes, both allocating): "
        "op ms / floor ms, floor / op"
    )
    print(f"{'B x L x N':>18} | " + " | ".join(f"{n:>24}" for n in names))
    for r in rows:
        cells = [f"{r[n]['op ms']:7.3f} / {r[n]['floor ms']:7.3f}, {r[n]['ratio']:4.2f}" for n in names]
        print(f"{'x'.join(map(str, r['size'])):>18} | " + " | ".join(f"{c:>24}" for c in cells))
    if rates:
        print(
            "in-cache rate, one thread, B=8 L=64 N=64, ns per element: "
            + ", ".join(f"{k} {v:.3f}" for k, v in rates.items())
        )
        print("fixed cost of a call (one step, 8 channels), us: " + ", ".join(f"{k} {v:.1f}" for k, v in fixed.items()))


def print_peer_table(rows, peers):
    print("\nspeed-up of the op over each peer (peer time / op time), forward | forward+backward")
    names = ["loop", *peers]
    print(f"{'B x L x N':>18} | " + " | ".join(f"{n:>17}" for n in names))
    for r in rows:
        cells = []
        for n in names:
            f, fb = r.get(f"speed-up vs {n} fwd"), r.get(f"speed-up vs {n} fwd+bwd")
            cell = "skipped" if n in r["skipped"] else f"{f:.1f}x" if f else "-"
            cells.append(f"{cell + (f' | {fb:.1f}x' if fb else ''):>17}")
        print(f"{'x'.join(map(str, r['size'])):>18} | " + " | ".join(cells))


def print_table(rows, device):
    heap = "warm" if heap_is_warm() else "cold"
    print(f"\nscan benchmark, complex64, lam (N,), device={device}, threads={torch.get_num_threads()}, heap={heap}")
    head = (
        f"{'B x L x N':>18} | {'copy GB/s a/r':>14} | {'scan GB/s a/r':>14} | {'fwd/copy a/r':>12} | "
        f"{'bwd GB/s':>8} | {'f+b GB/s':>8} | {'vs loop f':>9} | {'vs loop f+b':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        s, bw = r["size"], r["GB/s"]
        loop_f = f"{r['speed-up vs loop fwd']:.0f}x" if "speed-up vs loop fwd" in r else "-"
        loop_fb = f"{r['speed-up vs loop fwd+bwd']:.0f}x" if "speed-up vs loop fwd+bwd" in r else "-"
        print(
            f"{'x'.join(map(str, s)):>18} | {bw['copy alloc']:6.1f}/{bw['copy reuse']:6.1f} | "
            f"{bw['scan alloc']:6.1f}/{bw['scan reuse']:6.1f} | "
            f"{r['fwd / copy (alloc)']:5.2f}/{r['fwd / copy (reuse)']:5.2f} | {bw['backward alloc']:8.1f} | "
            f"{bw['scan fwd+bwd']:8.1f} | {loop_f:>9} | {loop_fb:>11}"
        )


def plot(rows, path, device):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["x".join(map(str, r["size"])) for r in rows]
    series = ["copy alloc", "scan alloc", "copy reuse", "scan reuse", "backward alloc", "scan fwd+bwd"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        ax.bar([j + i * width for j in range(len(rows))], [r["GB/s"][name] for r in rows], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], labels)
    ax.set_ylabel("GB/s (fewest bytes each pass must move)")
    ax.set_title(f"torch_lru.scan vs copy, complex64, {device}, {torch.get_num_threads()} threads")
    ax.legend(ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def parse_size(text):
    parts = text.strip().lower().split("x")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"bench_scan.py: --sizes takes BxLxN with positive integers, got {text!r}")
    return tuple(int(p) for p in parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    ap.add_argument("--sizes", help="comma-separated BxLxN (e.g. 1x4096x64,1x4096x1024) in place of the default sizes")
    ap.add_argument("--peers", default="jax,torch_assoc,fft", help="comma-separated; empty for none")
    ap.add_argument("--no-loop", action="store_true", help="skip the Python loop (the op against the copy only)")
    ap.add_argument("--no-backward", action="store_true", help="skip the backward against its floor")
    ap.add_argument("--heap", default="warm", choices=["warm", "cold"], help="see above")
    ap.add_argument("--plot", help="write a bar chart (PNG) here")
    ap.add_argument("--json", help="write the figures (JSON) here")
    args = ap.parse_args()
    given = None if args.sizes is None else [parse_size(s) for s in args.sizes.split(",")]
    if args.heap == "warm":
        warm_heap()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_scan.py: --device cuda but no GPU is visible")
    sizes = CUDA_SIZES if args.device == "cuda" else CPU_SIZES
    if args.quick:
        sizes = [(2, 512, 64), (1, 4096, 8)]
    if given is not None:
        sizes = given
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise SystemExit(f"bench_scan.py: unknown peer {unknown}; choose from {', '.join(PEERS)}")
    rows, backward_rows, real_rows, rates, fixed = [], [], [], {}, {}
    for size in sizes:  # figures are written after every size, so a run cut short keeps its rows
        rows.append(bench_size(*size, args.device, peers, loop=not args.no_loop))
        print_table(rows[-1:], args.device)
        if not args.no_backward:
            backward_rows.append(bench_backward(*size, args.device))
            real_rows.append(bench_backward(*size, args.device, dtype=torch.float32))
        if args.json:
            with open(args.json, "w") as f:
                figures = {"device": args.device, "threads": torch.get_num_threads(), "rows": rows}
                json.dump({**figures, "backward": backward_rows, "float32": real_rows}, f, indent=1)
    if not args.no_backward and args.device == "cpu":
        rates, fixed = in_cache_rates(args.device)
        if args.json:
            with open(args.json) as f:
                figures = json.load(f)
            with open(args.json, "w") as f:
                json.dump({**figures, "in_cache_ns": rates, "call_us": fixed}, f, indent=1)
    print_table(rows, args.device)
    print_peer_table(rows, peers)
    if backward_rows:
        print_backward_table(real_rows, {}, {}, title="float32 (real rows, the RG-LRU's scan)")
        print_backward_table(backward_rows, rates, fixed)
    if args.plot:
        plot(rows, args.plot, args.device)


if __name__ == "__main__":
    main()
