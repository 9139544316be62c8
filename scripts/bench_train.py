"""Training-step throughput of each LRA config's model (the paper's sizes): steps/s, tokens/s and
peak memory of forward + backward + optimiser step, on batches of the task's full sequence length
with random content (throughput does not depend on the data; accuracy runs use train_lra.py).

    scripts/python scripts/bench_train.py [--device cpu|cuda] [--steps 20] [--tasks listops,image] [--json PATH]
        [--quick]   (small models and lengths: a smoke run)
        [--compile] (also the step under torch.compile as train.compile runs it, timed after its
                     compilation, which is reported apart; speed-up = eager time / compiled time)
"""

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from torch_lru import train as training

# Full sequence length of each task's inputs (LRA; Text and Retrieval as S4/S5 and LRA use them).
LENGTHS = {"listops": 2048, "text": 4096, "retrieval": 4000, "image": 1024, "pathfinder": 1024, "pathx": 16384}


def synthetic_batch(task, info, batch, length, device):
    if info["vocab_size"]:
        x = torch.randint(1, info["vocab_size"], (batch, length), device=device)
    else:
        x = torch.rand(batch, length, info["channels"], device=device) * 2 - 1
    out = {"x": x, "mask": torch.ones(batch, length, dtype=torch.bool, device=device)}
    if info["dual"]:
        out["x2"], out["mask2"] = x.flip(0), out["mask"]
    out["y"] = torch.randint(0, info["n_classes"], (batch,), device=device)
    return out


def bench(task, device, steps, quick, compiled=False):
    config = training.load_config(task)
    info = training.tasks.task_info(task)
    batch, length = config["train"]["batch_size"], LENGTHS[task]
    if quick:
        config["model"].update(d_model=32, d_state=16, n_layers=2)
        batch, length = 4, min(length, 256)
    torch.manual_seed(0)
    model = training.build_model(config, info).to(device)
    optimizer = training.build_optimizer(model, config["optim"])
    amp = torch.bfloat16 if device == "cuda" and config["train"].get("amp") == "bf16" else None
    data = synthetic_batch(task, info, batch, length, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    net = training.compile_model(model, fullgraph=True) if compiled else model
    clock = training.CompileClock() if compiled else None

    def step():
        logits = training.forward(net, data, torch.device(device), amp)
        loss = F.cross_entropy(logits, data["y"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()
    step()  # a second shape-identical step: nothing is left to compile after it
    sync()
    compile_s = clock.seconds if clock else 0.0
    if clock:
        clock.close()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / steps
    tokens = batch * length * (2 if info["dual"] else 1)
    return {
        "task": task,
        "batch": batch,
        "length": length,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps_per_s": 1 / seconds,
        "tokens_per_s": tokens / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan"),
        "amp": "bf16" if amp else "fp32",
        "compiled": compiled,
        "compile_s": compile_s,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--tasks", default=",".join(LENGTHS))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also time the compiled step (see above)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_train.py: --device cuda needs a CUDA GPU")
    rows = []
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"training step per LRA config, {name}, torch {torch.__version__}")
    head = f"{'task':<11} {'batch':>5} {'length':>7} {'params':>8} {'steps/s':>8} {'tokens/s':>10} {'peak GiB':>9} amp"
    print(head + ("  compiled: steps/s speed-up compile s" if args.compile else ""))
    for task in args.tasks.split(","):
        try:
            r = bench(task, args.device, args.steps, args.quick)
            c = bench(task, args.device, args.steps, args.quick, compiled=True) if args.compile else None
        except torch.OutOfMemoryError:
            print(f"{task:<11} out of memory at the config's batch size")
            continue
        rows.append(r if c is None else dict(r, compiled_run=c))
        extra = (
            f"  {c['steps_per_s']:>17.2f} {c['steps_per_s'] / r['steps_per_s']:>7.2f}x {c['compile_s']:>9.1f}"
            if c
            else ""
        )
        print(
            f"{task:<11} {r['batch']:>5} {r['length']:>7} {r['parameters'] / 1e6:>7.2f}M {r['steps_per_s']:>8.2f} "
            f"{r['tokens_per_s']:>10.0f} {r['peak_gib']:>9.2f} {r['amp']}{extra}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
