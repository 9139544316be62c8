"""Benchmark of the scan op against the memory-bound floor (a copy of the same bytes) and a plain
PyTorch loop over t, forward and forward+backward, complex64 with time-invariant lam (the LRU).

Like is timed with like: "alloc" rows allocate their output on every call (scan vs x.clone()),
"reuse" rows write into memory allocated once (scan(..., out=h) vs h.copy_(x)). Bandwidth counts
the fewest bytes each pass must move: forward reads x and writes h; backward reads grad_h and h and
writes grad_x (the per-channel grad_lam is negligible).

    scripts/python scripts/bench_scan.py [--device cpu|cuda] [--quick] [--plot PATH] [--json PATH]
"""

import argparse
import json
import statistics
import sys
import time

import torch

import torch_lru
from torch_lru.reference import scan_loop

CPU_SIZES = [(8, 4096, 256), (8, 8192, 256), (1, 2**20, 64), (1, 4096, 64), (1, 4096, 1024)]
CUDA_SIZES = [(32, 8192, 512), (1, 2**20, 256), (64, 1024, 256)]
LOOP_MAX_L = 8192  # the Python loop is too slow to time beyond this


def timeit(fn, device, min_time=0.4, max_reps=50):
    """Median seconds of one call, after a warm-up call."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (time.perf_counter() - start < min_time or len(times) < 3):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bench_size(B, L, N, device):
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
    t["copy alloc"] = timeit(lambda: x.clone(), device)
    t["copy reuse"] = timeit(lambda: out.copy_(x), device)
    t["scan alloc"] = timeit(lambda: torch_lru.scan(lam, x), device)
    t["scan reuse"] = timeit(lambda: torch_lru.scan(lam, x, out=out), device)
    t["backward alloc"] = timeit(lambda: torch.ops.torch_lru.scan_backward(g, lam, h, None, False, mask), device)

    lam_r, x_r = lam.clone().requires_grad_(), x.clone().requires_grad_()

    def fwd_bwd(scan_fn):
        y = scan_fn(lam_r, x_r)
        torch.autograd.grad(y, (lam_r, x_r), g)

    t["scan fwd+bwd"] = timeit(lambda: fwd_bwd(torch_lru.scan), device)
    log(f"  op timed: {', '.join(f'{k} {v * 1e3:.1f} ms' for k, v in t.items())}")
    if L <= LOOP_MAX_L:
        with torch.no_grad():
            t["loop fwd"] = timeit(lambda: scan_loop(lam, x), device, min_time=0.2, max_reps=5)
        t["loop fwd+bwd"] = timeit(lambda: fwd_bwd(scan_loop), device, min_time=0.2, max_reps=3)

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
    if "loop fwd" in t:
        row["speed-up vs loop fwd"] = t["loop fwd"] / t["scan alloc"]
        row["speed-up vs loop fwd+bwd"] = t["loop fwd+bwd"] / t["scan fwd+bwd"]
    return row


def print_table(rows, device):
    print(f"\nscan benchmark, complex64, lam (N,), device={device}, threads={torch.get_num_threads()}")
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    ap.add_argument("--plot", help="write a bar chart (PNG) here")
    ap.add_argument("--json", help="write the figures (JSON) here")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_scan.py: --device cuda but no GPU is visible")
    sizes = CUDA_SIZES if args.device == "cuda" else CPU_SIZES
    if args.quick:
        sizes = [(2, 512, 64), (1, 4096, 8)]
    rows = [bench_size(*s, args.device) for s in sizes]
    print_table(rows, args.device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)
    if args.plot:
        plot(rows, args.plot, args.device)


if __name__ == "__main__":
    main()
