"""Benchmark of streaming inference: a unidirectional model run one token at a time, microseconds
per token and tokens per second, for B=1 and B=32 rows, on one thread (by default).

    scripts/python scripts/bench_stream.py [--device cpu|cuda] [--threads 1] [--tokens 200]
        [--layer lru] [--block lru] [--cpp BUILD/stream_example] [--json PATH]

The model: six blocks, d_model 128, d_state 256, LayerNorm, unidirectional, token inputs. Rows,
timed side by side in one process (memory reused, after warm-up):
- "per-block loop, unfused": what streaming cost before ``LRUModel.step``: a loop over the blocks
  by hand, each block stepping op by op (norm, ``torch_lru::lru_step``, which packs the LRU's
  weights again for every token, GELU, GLU, residual), as ``LRUBlock.step`` did (LRU layers only);
- "per-block loop": the same loop over ``block.step``, which is now one op per block;
- "LRUModel.step": the model's own step (the pooling carried in the state);
- "LRUModel.step, compiled": the same under ``torch.compile`` (CPU: inductor);
- with ``--cpp``: the C++ example streaming the same checkpoint (its own timing, printed by it);
- on CUDA, "LRUModel.step, CUDA graph": the step captured once into a CUDA graph (static input
  and state tensors, the state update inside the graph) and replayed per token.
"""

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import torch_lru


def build(layer, block, device):
    torch.manual_seed(0)
    model = torch_lru.LRUModel(
        10, d_model=128, d_state=256, n_layers=6, vocab_size=16, layer=layer, block=block, norm="layer"
    )
    return model.to(device).eval()


def per_block_loop(model):
    def step(x_t, state):
        z = model.encoder(x_t)
        new = []
        for block, s in zip(model.blocks, state):
            z, s = block.step(z, s)
            new.append(s)
        return model.decoder(z), new + state[len(model.blocks) :]

    return step


def unfused_loop(model):
    def block_step(block, x_t, state):
        z = block.norm(x_t.unsqueeze(1)).squeeze(1) if block.prenorm else x_t
        y, state = torch.ops.torch_lru.lru_step(z, *block.lru.direction_parameters(), block.lru.D, state)
        out = x_t + block._mix(y)
        return (out if block.prenorm else block.norm(out.unsqueeze(1)).squeeze(1)), state

    def step(x_t, state):
        z = model.encoder(x_t)
        new = []
        for block, s in zip(model.blocks, state):
            z, s = block_step(block, z, s)
            new.append(s)
        return model.decoder(z), new + state[len(model.blocks) :]

    return step


def cuda_graph_step(model, B, device):
    """model.step captured into a CUDA graph: per token, copy the input in and replay."""
    static_x = torch.zeros(B, dtype=torch.long, device=device)
    static_state = model.init_state(B)
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture (allocations, packed weights)
            for _ in range(3):
                model.step(static_x, static_state)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits, new_state = model.step(static_x, static_state)
            for old, new in zip(static_state, new_state):
                old.copy_(new)

    def step(x_t, state):
        static_x.copy_(x_t)
        graph.replay()
        return logits, state

    return step


def time_per_token(step, state, tokens, device):
    """Median over 5 rounds of the time per token of `tokens` steps."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for x_t in tokens[:10]:  # warm-up
            _, state = step(x_t, state)
        rounds = []
        for _ in range(5):
            sync()
            start = time.perf_counter()
            for x_t in tokens:
                _, state = step(x_t, state)
            sync()
            rounds.append((time.perf_counter() - start) / len(tokens))
    return statistics.median(rounds)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--layer", default="lru")
    ap.add_argument("--block", default="lru")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--batches", default="1,32", help="batch sizes, comma-separated")
    ap.add_argument("--cpp", help="the built stream_example binary: time the C++ model on the same checkpoint")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.layer, args.block, device)
    rows = []
    for B in (int(b) for b in args.batches.split(",")):
        tokens = [torch.randint(0, 16, (B,), device=device) for _ in range(args.tokens)]
        impls = {"per-block loop": per_block_loop(model), "LRUModel.step": model.step}
        if args.layer == "lru" and args.block == "lru":
            impls = {"per-block loop, unfused": unfused_loop(model), **impls}
        if not args.no_compile:
            impls["LRUModel.step, compiled"] = torch.compile(model.step, fullgraph=True)
        if device.type == "cuda":
            impls["LRUModel.step, CUDA graph"] = cuda_graph_step(model, B, device)
        for name, step in impls.items():
            start = time.perf_counter()
            t = time_per_token(step, model.init_state(B), tokens, device)
            rows.append({"impl": name, "B": B, "us_per_token": 1e6 * t, "tokens_per_s": B / t})
            print(
                f"{name:28} B={B:<3} {1e6 * t:9.1f} us/token {B / t:11.0f} tokens/s "
                f"(incl. warm-up/compile {time.perf_counter() - start:.1f} s)",
                flush=True,
            )
        if args.cpp:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.pt"
                torch_lru.save_state_dict(model, path)
                cmd = [args.cpp, str(path), f"--batch={B}", f"--tokens={args.tokens}", f"--threads={args.threads}"]
                cmd += [f"--layer={args.layer}", f"--block={args.block}"]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                print(out.strip())
                us = float(out.split("us/token")[0].split()[-1])
                rows.append({"impl": "C++ LRUModel::step", "B": B, "us_per_token": us, "tokens_per_s": B / us * 1e6})
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
