"""Benchmark of the LRU layer and a 6-layer LRUModel, forward+backward, against the same modules
with the recurrence computed the way plain PyTorch ports do it (complex matrices and a Python loop
over time: torch_lru.reference.lru_loop). Same parameters, same inputs, timed side by side.

Throughput is tokens (batch x length) per second of one forward+backward pass. The layer is also
timed against its floor, the work it cannot avoid, timed beside it in the same process: its two
GEMMs forward (B u and Re(C x)) and their four backward GEMMs, plus the scan's forward and its
backward (grad_x and grad_lam); "of floor" is the layer's time over the floor's. Peak memory is the
extra memory one forward+backward needs beyond the model and inputs: on CUDA the allocator's peak
(torch.cuda.max_memory_allocated); on the CPU the growth of the process's peak resident size, each
measurement in a fresh process so that one does not hide another. --heap warm (the default) keeps
freed memory for reuse, as in bench_scan.py (scripts/bench_timing.py).

    scripts/python scripts/bench_lru.py [--device cpu|cuda] [--quick] [--heap warm|cold] [--json PATH]
"""

import argparse
import json
import resource
import subprocess
import sys
import types

import torch
from bench_timing import MAX_WARMUP_CALLS, heap_is_warm, median_seconds, warm_heap

import torch_lru
from torch_lru.reference import lru_loop

# name: (kind, batch, length, d_model, d_state)
SIZES = {
    "cpu": {"layer": ("layer", 8, 2048, 128, 256), "model": ("model", 8, 1024, 128, 128)},
    "cuda": {"layer": ("layer", 32, 4096, 256, 256), "model": ("model", 32, 2048, 256, 256)},
    "quick": {"layer": ("layer", 2, 256, 32, 32), "model": ("model", 2, 128, 32, 32)},
}
IMPLS = ("torch_lru", "loop")


def loop_forward(self, u, state=None, return_state=False, mask=None):
    """LRU.forward with the ports' recurrence (no mask, no state: what the benchmark needs)."""
    y, _ = lru_loop(u, *self.direction_parameters(), self.D)
    if self.bidirectional:
        y = y + lru_loop(u, *self.direction_parameters(reverse=True), None, reverse=True)[0]
    return y


def build(kind, B, L, H, N, impl, device):
    torch.manual_seed(0)
    if kind == "layer":
        module = torch_lru.LRU(H, N, r_min=0.9, r_max=0.999)
        layers = [module]
        inputs = (torch.randn(B, L, H),)
    else:
        module = torch_lru.LRUModel(10, d_model=H, d_state=N, n_layers=6, vocab_size=16)
        layers = [block.lru for block in module.blocks]
        inputs = (torch.randint(0, 16, (B, L)),)
    if impl == "loop":
        for layer in layers:
            layer.forward = types.MethodType(loop_forward, layer)
    module = module.to(device)
    return module, tuple(t.to(device) for t in inputs)


def step_fn(module, inputs):
    def run():
        out = module(*inputs)
        out.float().square().mean().backward()

    return run


def floor_fn(B, L, H, N, device):
    """The layer's unavoidable work, on tensors prepared once (outputs allocated as the layer's are)."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(B * L, H, generator=g).to(device)
    w_in = torch.randn(2 * N, H, generator=g).to(device) / H**0.5
    w_out = torch.randn(H, 2 * N, generator=g).to(device) / N**0.5
    lam = torch.polar(0.9 + 0.09 * torch.rand(N, generator=g), torch.rand(N, generator=g)).to(device)
    grad_y = torch.randn(B * L, H, generator=g).to(device)
    backward = torch.ops.torch_lru.scan_backward

    def run():
        x = torch.view_as_complex((u @ w_in.T).view(B, L, N, 2))
        h = torch_lru.scan(lam, x)
        h_real = torch.view_as_real(h).view(B * L, 2 * N)
        h_real @ w_out.T  # y
        grad_h = torch.view_as_complex((grad_y @ w_out).view(B, L, N, 2))
        grad_y.T @ h_real  # grad of w_out
        grad_lam, grad_x, _ = backward(grad_h, lam, h, None, False, [True, True, False])
        grad_x_real = torch.view_as_real(grad_x).view(B * L, 2 * N)
        grad_x_real @ w_in  # grad of u
        grad_x_real.T @ u  # grad of w_in

    return run


def measure_floor(device, quick):
    """The layer's forward+backward (its input needing a gradient, as inside a model; a given
    output gradient, no loss) against floor_fn, alternated."""
    kind, B, L, H, N = SIZES["quick" if quick else device]["layer"]
    module, (u,) = build(kind, B, L, H, N, "torch_lru", device)
    u.requires_grad_(True)
    grad_y = torch.randn(B, L, H, device=device)

    def layer():
        torch.autograd.backward(module(u), grad_y)

    floor = floor_fn(B, L, H, N, device)
    layer_s, floor_s = [], []
    for _ in range(3):  # alternated, so that both see the same machine
        layer_s.append(median_seconds(layer, device, 0.5, max_reps=10, min_reps=2, label="layer"))
        floor_s.append(median_seconds(floor, device, 0.5, max_reps=10, min_reps=2, label="floor"))
    return {"shape": f"B={B} L={L} H={H} N={N}", "layer_s": min(layer_s), "floor_s": min(floor_s)}


def measure(name, impl, device, quick):
    """One row: seconds per forward+backward and peak extra memory (bytes)."""
    kind, B, L, H, N = SIZES["quick" if quick else device][name]
    module, inputs = build(kind, B, L, H, N, impl, device)
    fn = step_fn(module, inputs)
    if device == "cuda":
        fn()
        torch.cuda.synchronize()
        module.zero_grad(set_to_none=False)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        fn()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    loop = impl == "loop"  # too slow to warm up more than once
    warmup = 1 if loop else MAX_WARMUP_CALLS
    seconds = median_seconds(fn, device, 0.5 if loop else 1.0, 3 if loop else 20, 2, max_warmup=warmup, label=name)
    return {
        "name": name,
        "impl": impl,
        "shape": f"B={B} L={L} H={H} N={N}" + (" layers=6" if kind == "model" else ""),
        "seconds": seconds,
        "tokens_per_s": B * L / seconds,
        "peak_bytes": peak,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--json", help="write the rows (JSON) here")
    ap.add_argument("--heap", default="warm", choices=["warm", "cold"], help="see bench_timing.py")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # NAME:IMPL, measured in this process (CPU runs)
    args = ap.parse_args()
    if args.heap == "warm":
        warm_heap()  # the measuring processes below inherit it
    if args.one:
        name, impl = args.one.split(":")
        row = (
            measure_floor(args.device, args.quick) if name == "floor" else measure(name, impl, args.device, args.quick)
        )
        print(json.dumps(row))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_lru.py: --device cuda needs a CUDA GPU")

    rows = []
    for name in ("layer", "model"):
        for impl in IMPLS:
            print(f"measuring {name} / {impl} ...", file=sys.stderr, flush=True)
            if args.device == "cpu":  # a fresh process: the peak resident size only grows
                cmd = [sys.executable, __file__, "--device", "cpu", "--one", f"{name}:{impl}"]
                cmd += ["--quick"] if args.quick else []
                done = subprocess.run(cmd, check=True, capture_output=True, text=True)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            else:
                rows.append(measure(name, impl, args.device, args.quick))

    print("measuring the layer against its floor ...", file=sys.stderr, flush=True)
    if args.device == "cpu":
        cmd = [sys.executable, __file__, "--device", "cpu", "--one", "floor:-"] + (["--quick"] if args.quick else [])
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        floor = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        floor = measure_floor(args.device, args.quick)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    heap = "warm" if heap_is_warm() else "cold"
    print(
        f"LRU forward+backward, float32, {device_name}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, heap {heap}"
    )
    print(f"{'module':<7} {'shape':<32} {'impl':<10} {'ms':>9} {'tokens/s':>11} {'peak MiB':>9} {'speed-up':>9}")
    for row in rows:
        ours = next(r for r in rows if r["name"] == row["name"] and r["impl"] == "torch_lru")
        label = "" if row is ours else f"{ours['tokens_per_s'] / row['tokens_per_s']:.1f}x"
        print(
            f"{row['name']:<7} {row['shape']:<32} {row['impl']:<10} {row['seconds'] * 1e3:>9.1f} "
            f"{row['tokens_per_s']:>11.0f} {row['peak_bytes'] / 2**20:>9.1f} {label:>9}"
        )
    print("speed-up: torch_lru's throughput over the loop's, same module and input")
    layer_ms, floor_ms = floor["layer_s"] * 1e3, floor["floor_s"] * 1e3
    print(
        f"LRU layer {floor['shape']}: forward+backward {layer_ms:.1f} ms, floor (2 GEMMs + their backward + scan + "
        f"scan backward) {floor_ms:.1f} ms: {layer_ms / floor_ms:.2f}x of floor"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name, "torch": torch.__version__, "rows": rows, "floor": floor}, f, indent=1)


if __name__ == "__main__":
    main()
