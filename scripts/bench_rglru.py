"""Benchmark of the RG-LRU layer (torch_lru.layers.RGLRU, Griffin's recurrent block), forward +
backward, against the LRU layer at the same model width and against the same RG-LRU layer written
with a Python loop over time (torch_lru.reference.rglru_loop: what a plain PyTorch port computes).
Beside them the layer's five width-H matrix products alone, chained as in the layer, with their
backward (ten more): a bound on any implementation of the layer as defined (dense gate maps).
Same inputs, timed side by side in one process, the implementations interleaved round by round;
each figure is the median over the rounds. Memory is reused between rounds (the first rounds
are warm-up and not counted).

    scripts/python scripts/bench_rglru.py [--device cpu|cuda] [--quick] [--json PATH]

Prints ms per forward+backward, tokens (batch x length) per second, and each row's time over the
RG-LRU layer's.
"""

import argparse
import json
import statistics
import time

import torch

import torch_lru
from torch_lru.layers import RGLRU
from torch_lru.reference import rglru_loop

# (batch, length, d_model); the recurrent widths are below
SIZES = {"cpu": (8, 2048, 128), "cuda": (32, 4096, 256), "quick": (2, 128, 16)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def rglru_in_a_loop(layer):
    params = dict(layer.named_parameters())
    return lambda u: rglru_loop(u, params)[0]


def the_gemms_alone(rg):
    """W_in_x, W_in_gate, the two gate maps and W_out as dense products (the default gate_blocks=1),
    chained as in the layer; nothing else of it (no scan, gates, convolution or GeLU)."""
    H, N = rg.d_model, rg.d_state
    shapes = [(H, N), (H, N), (N, N), (N, N), (N, H)]
    W = [torch.randn(shape, device=rg.Lambda.device, requires_grad=True) for shape in shapes]

    def fn(u):
        x, gate = u @ W[0], u @ W[1]
        return (gate * (x @ W[2] + x @ W[3])) @ W[4]

    return fn


def rows(B, L, H, device):
    torch.manual_seed(0)
    rg = RGLRU(H, H).to(device)
    lru_same = torch_lru.LRU(H, H, r_min=0.9, r_max=0.999).to(device)
    lru_wide = torch_lru.LRU(H, 2 * H, r_min=0.9, r_max=0.999).to(device)
    return {
        f"rglru (d_state {H})": rg,
        f"lru (d_state {H})": lru_same,
        f"lru (d_state {2 * H})": lru_wide,
        f"rglru, Python loop over t (d_state {H})": rglru_in_a_loop(rg),
        f"rglru's GEMMs alone (d_state {H})": the_gemms_alone(rg),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="write the rows (JSON) here")
    args = ap.parse_args()
    device = torch.device(args.device)
    B, L, H = SIZES["quick" if args.quick else args.device]
    u = torch.randn(B, L, H, device=device, requires_grad=True)
    grad = torch.randn(B, L, H, device=device)
    impls = rows(B, L, H, device)

    def run(fn):
        u.grad = None
        y = fn(u)
        y.backward(grad)
        sync(device)

    times = {name: [] for name in impls}
    warmup = 2
    for r in range(warmup + args.rounds):
        for name, fn in impls.items():
            if "loop" in name and r < warmup - 1:
                continue  # one warm-up round is enough for the slow one
            start = time.perf_counter()
            run(fn)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times[next(iter(impls))])
    print(
        f"RG-LRU layer forward+backward, B={B} L={L} H={H}, {args.device}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} rounds"
    )
    print(f"{'implementation':44} {'ms':>10} {'tokens/s':>12} {'x rglru':>8}")
    out = []
    for name, samples in times.items():
        t = statistics.median(samples)
        out.append({"name": name, "ms": 1e3 * t, "tokens_per_s": B * L / t, "vs_rglru": t / base})
        print(f"{name:44} {1e3 * t:10.1f} {B * L / t:12.0f} {t / base:8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"B": B, "L": L, "H": H, "device": args.device, "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
