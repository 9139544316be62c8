"""Training an LRUModel on an LRA task: the loop behind scripts/train_lra.py, top to bottom.

config (a JSON file checked against torch_lru.config's schema) -> data splits (tasks.load_splits)
-> model -> AdamW with the LRU group apart -> warm-up + cosine schedule -> steps, with evaluation,
metrics.csv, checkpoints (last.pt, best.pt) and, at the end, the test split at the best
checkpoint (summary.json) and the curves (curves.png).

Resuming from last.pt restores the model, optimiser, schedule, random number generators, the
position in the epoch and the half-filled logging window, so an interrupted and resumed run takes
the same steps and writes the same metrics.csv as one that was not; a resume whose config, data
folder, step budget or world size differs from the checkpoint's is refused (naming the key).
A step whose loss or gradient is not finite is skipped (no update, the norms' statistics
restored, counted in the summary); train.max_skipped_steps of them in a row, a non-finite
validation loss or non-finite weights stop the run, and no checkpoint is ever written from such a
state. Checkpoints are read with torch.load(weights_only=True) only.
Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: each rank takes every
world-th batch, metrics are summed across ranks, and rank 0 writes the files.
With train.compile (by default on for long CPU runs, see wants_compile) the training step runs the
model through torch.compile; evaluation stays eager, checkpoints hold the plain model's weights,
and the time spent compiling is measured apart from the steps' (summary.json: compile_time_s).
"""

import copy
import csv
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoint import CheckpointError, atomic_save, load_checkpoint, save_state_dict
from .config import CONFIG_DIR, ConfigError, load_config  # noqa: F401  (part of this module's API)
from .layers import COMPILE_BLOCKERS
from .lra import data as lra_data
from .lra import tasks
from .modules import LRUModel


class RunError(RuntimeError):
    """A run that cannot start or go on as asked: the message says why."""


class NonFiniteLoss(RunError):
    pass


# ---- distributed set-up ----


def world() -> tuple:
    """(rank, world size, local rank), initialising torch.distributed under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if size > 1:
        return dist.get_rank(), size, int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def all_sum(values, device) -> list:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


# ---- model and optimiser ----


def build_model(config: dict, info: dict) -> LRUModel:
    m = dict(config["model"])
    if info["vocab_size"]:
        m["vocab_size"] = info["vocab_size"]
    else:
        m["d_input"] = info["channels"]
    return LRUModel(d_output=info["n_classes"], dual=info["dual"], **m)


def recurrence_parameters(model) -> set:
    """The parameters each recurrent layer names as its recurrence's (``recurrence_parameters``,
    in either direction): a smaller learning rate and no weight decay (the paper, after S5)."""
    out = set()
    for module in model.modules():
        names = getattr(module, "recurrence_parameters", ())
        for name, p in module.named_parameters(recurse=False):
            if name.removesuffix("_rev") in names:
                out.add(p)
    return out


def build_optimizer(model, optim: dict):
    recurrence = recurrence_parameters(model)
    lru, other_decay, other_no_decay = [], [], []
    for p in model.parameters():
        if p in recurrence:
            lru.append(p)
        elif p.dim() < 2:  # norms, biases and D: no weight decay
            other_no_decay.append(p)
        else:
            other_decay.append(p)
    groups = [
        {"params": other_decay, "lr": optim["lr"], "weight_decay": optim["weight_decay"]},
        {"params": other_no_decay, "lr": optim["lr"], "weight_decay": 0.0},
        {"params": lru, "lr": optim["lru_lr"], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, betas=tuple(optim["betas"]))


def warmup_cosine(total_steps: int, warmup_fraction: float, floor: float):
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# ---- files ----


class Metrics:
    """metrics.csv (and TensorBoard, when installed), rank 0 only."""

    FIELDS = ("step", "split", "loss", "accuracy", "lr", "tokens_per_s")

    def __init__(self, out: Path, enabled: bool, resume: bool):
        self.enabled = enabled
        self.path = out / "metrics.csv"
        self.writer = None
        if not enabled:
            return
        if not (resume and self.path.exists()):
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.writer = None

    def write(self, step, split, loss, accuracy, lr, tokens_per_s=float("nan")):
        if not self.enabled:
            return
        row = [step, split, f"{loss:.6f}", f"{accuracy:.6f}", f"{lr:.3e}", f"{tokens_per_s:.1f}"]
        try:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerow(row)
        except OSError as e:
            raise RunError(f"{self.path}: could not be written ({e.strerror}; is the disk full?)") from None
        if self.writer is not None:
            self.writer.add_scalar(f"{split}/loss", loss, step)
            self.writer.add_scalar(f"{split}/accuracy", accuracy, step)

    def drop_after(self, step: int) -> None:
        """On resume: forget rows written after the checkpoint's step (they will be redone)."""
        if not (self.enabled and self.path.exists()):
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or tuple(rows[0]) != self.FIELDS:
            raise RunError(f"{self.path}:1: expected the header {','.join(self.FIELDS)}; is this a run folder?")
        kept = [rows[0]]
        for lineno, row in enumerate(rows[1:], start=2):
            if not row or not row[0].isdigit():
                raise RunError(f"{self.path}:{lineno}: expected a metrics row starting with a step, got {row!r}")
            if int(row[0]) <= step:
                kept.append(row)
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerows(kept)


def plot_curves(metrics_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_path) as f:
        rows = list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for split in ("train", "val"):
        r = [x for x in rows if x["split"] == split]
        if not r:
            continue
        steps = [int(x["step"]) for x in r]
        axes[0].plot(steps, [float(x["loss"]) for x in r], label=split)
        axes[1].plot(steps, [float(x["accuracy"]) for x in r], label=split)
    for ax, name in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


# ---- set-up ----


@dataclass
class Run:
    """Everything a run is made of, fixed once set up."""

    config: dict
    out: Path
    device: torch.device
    rank: int
    size: int
    splits: dict
    identity: dict  # what a resumed run must share with the checkpoint, besides the config
    total: int
    steps_per_epoch: int
    eval_every: int
    amp_dtype: Optional[torch.dtype]
    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its DDP wrapper (evaluation runs it)
    train_net: torch.nn.Module  # what the training step runs: net, compiled when `compiled`
    compiled: bool
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR


def fresh_progress() -> dict:
    """The run's position and counters, saved in last.pt: the step, the epoch and the batch in it,
    the best validation score, the skipped steps, and the logging window since the last row."""
    return {
        "step": 0,
        "epoch": 0,
        "position": 0,
        "best_val": -1.0,
        "best_step": 0,
        "train_time": 0.0,
        "skipped_steps": 0,
        "skipped_in_a_row": 0,
        "compile_time": 0.0,  # seconds torch.compile spent in the steps (kept out of train_time)
        "window": fresh_window(),
    }


def fresh_window() -> dict:
    return {"loss": 0.0, "correct": 0.0, "count": 0.0, "tokens": 0.0, "time": 0.0}


# A CPU run of at least this many steps compiles by default: on the reduced ListOps config,
# compiled steps took 0.71x the eager time after about 50 s of compilation (docs/perf.md), which
# a run repays after about 1,000 steps.
COMPILE_MIN_STEPS = 1000


def wants_compile(choice: Optional[bool], device: torch.device, total_steps: int, layer: str = "lru") -> bool:
    """train.compile: true or false as given; null chooses (see COMPILE_MIN_STEPS). A layer that
    does not compile without graph breaks (torch_lru.layers.COMPILE_BLOCKERS) runs eagerly under
    null, and true is refused for it."""
    blocker = COMPILE_BLOCKERS[layer]
    if choice and blocker:
        raise RunError(
            f"train.compile=true, but model.layer={layer} does not compile without graph breaks ({blocker}); "
            "set train.compile=false or leave it null"
        )
    if choice is not None:
        return choice
    return device.type == "cpu" and total_steps >= COMPILE_MIN_STEPS and blocker is None


def compile_model(net: torch.nn.Module, fullgraph: bool) -> torch.nn.Module:
    """torch.compile with dynamic shapes (batches differ in length; one graph serves them all).
    Inductor leaves complex ops to ATen and says so once per op; that, and torch's note that no
    CUDA runtime is found on a CPU-only machine, are silenced. Graphs of models compiled before in
    this process (the ablation trains many in one) are dropped first: each would count against
    dynamo's limit of recompilations per function, which fullgraph turns into an error."""
    import logging

    torch._dynamo.reset()

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not support code generation for complex operators.*")
    return torch.compile(net, dynamic=True, fullgraph=fullgraph)


class CompileClock:
    """Seconds spent in torch.compile (graphs compiled by dynamo and backward graphs compiled
    lazily alike), from its compile start and end callbacks; close() unregisters them."""

    def __init__(self):
        from torch._dynamo.callback import callback_handler

        self.seconds, self._start, self._handler = 0.0, None, callback_handler
        callback_handler.register_start_callback(self._on_start)
        callback_handler.register_end_callback(self._on_end)

    def _on_start(self, args) -> None:
        self._start = time.perf_counter()

    def _on_end(self, args) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def close(self) -> None:
        self._handler.remove_start_callback(self._on_start)
        self._handler.remove_end_callback(self._on_end)


def set_up(config, out_dir, data_dir, device, max_steps, cache_dir) -> Run:
    rank, size, local_rank = world()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(f"cuda:{local_rank}" if device == "cuda" and size > 1 else device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if max_steps is not None and int(max_steps) < 1:
        raise RunError(f"max_steps must be >= 1, got {max_steps}")
    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    tc, oc = config["train"], config["optim"]
    torch.manual_seed(tc["seed"])  # the same initial model on every rank

    task = config["task"]
    info = tasks.task_info(task)
    data_dir = data_dir or config.get("data_dir")
    if not data_dir and task != "fmnist":
        raise RunError(f"task {task} needs its data folder (--data-dir)")
    splits = tasks.load_splits(task, data_dir, config["data"], cache_dir)
    train_split = splits["train"]
    if train_split.channels:  # pixels per step as read (CIFAR: 1 grey or 3 colour channels)
        info = dict(info, channels=train_split.channels)
    batch_size = tc["batch_size"]
    n_batches = len(lra_data.batches(train_split.lengths(), batch_size, tc["seed"], 0))
    steps_per_epoch = n_batches // size
    if steps_per_epoch < 1:
        raise RunError(
            f"the train split has {len(train_split)} rows: {n_batches} batches of {batch_size}, fewer than the "
            f"{size} processes that each need one"
        )
    total = int(max_steps or tc["max_steps"] or tc["epochs"] * steps_per_epoch)

    model = build_model(config, info).to(device)
    optimizer = build_optimizer(model, oc)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, oc["warmup_fraction"], oc["min_lr"] / oc["lr"])
    )
    net = model
    if size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    compiled = wants_compile(tc["compile"], device, total, config["model"]["layer"])
    train_net = compile_model(net, fullgraph=size == 1) if compiled else net
    return Run(
        config=config,
        out=out,
        device=device,
        rank=rank,
        size=size,
        splits=splits,
        identity={
            "data_dir": str(tasks.resolve_data_dir(task, data_dir).resolve()),
            "total_steps": total,
            "world_size": size,
        },
        total=total,
        steps_per_epoch=steps_per_epoch,
        eval_every=tc["eval_every"] or steps_per_epoch,
        amp_dtype=torch.bfloat16 if tc["amp"] == "bf16" and device.type == "cuda" else None,
        model=model,
        net=net,
        train_net=train_net,
        compiled=compiled,
        optimizer=optimizer,
        schedule=schedule,
    )


# ---- checkpoints ----


def state_is_finite(model) -> bool:
    """True when every parameter and floating-point buffer is finite (one reduction, one sync)."""
    tensors = [t.detach() for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors, float("inf")))).all())


def _differences(saved, current, prefix="") -> list:
    """'key: old -> new' for every entry where two configs (nested dicts) differ."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} in the checkpoint, {json.dumps(b)} now")
    return out


def resumable(config: dict) -> dict:
    """The config entries a resumed run must share with its checkpoint: all but the notes on
    sources and train.compile (compiling changes rounding, not the run)."""
    out = {k: v for k, v in config.items() if k != "_sources"}
    if isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if k != "compile"}
    return out


class Checkpoints:
    """last.pt (everything needed to go on exactly) and best.pt (the best validation weights).

    Every file holds tensors and plain containers only and is read with weights_only=True. A state
    with non-finite weights is never written."""

    KEYS = ("model", "optimizer", "schedule", "progress", "rng", "config", "identity")

    def __init__(self, run: Run):
        self.run = run
        self.last, self.best = run.out / "last.pt", run.out / "best.pt"

    def check_finite(self, step: int) -> None:
        """Stops the run (on every rank alike) when the weights or the norms' statistics are not finite."""
        if not state_is_finite(self.run.model):
            raise NonFiniteLoss(
                f"the weights are not finite at step {step}: stopping; the last good checkpoint is {self.kept()}"
            )

    def kept(self) -> str:
        return str(self.last) if self.last.exists() else "none (none was written yet)"

    def save_last(self, progress: dict) -> None:
        run = self.run
        self.check_finite(progress["step"])
        rng = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        }
        rngs = [rng]
        if run.size > 1:
            rngs = [None] * run.size
            dist.all_gather_object(rngs, rng)
        if run.rank == 0:
            ckpt = {
                "model": dict(run.model.state_dict()),
                "optimizer": run.optimizer.state_dict(),
                "schedule": run.schedule.state_dict(),
                "progress": progress,
                "rng": rngs,
                "config": run.config,
                "identity": run.identity,
            }
            atomic_save(ckpt, self.last)
        if run.size > 1:
            dist.barrier()

    def save_best(self, step: int, val_accuracy: float) -> None:
        """Called after check_finite, on every rank; rank 0 writes."""
        if self.run.rank == 0:
            model = dict(self.run.model.state_dict())
            atomic_save(
                {"model": model, "step": step, "val_accuracy": val_accuracy, "config": self.run.config}, self.best
            )

    def resume(self) -> dict:
        """Restores last.pt into the run; returns the progress. Refuses a checkpoint made with
        another config, data folder, step budget or world size."""
        run = self.run
        if not self.last.exists():
            raise FileNotFoundError(f"--resume: {self.last} does not exist")
        ckpt = load_checkpoint(self.last)
        missing = [k for k in self.KEYS if not (isinstance(ckpt, dict) and k in ckpt)]
        if missing:
            raise CheckpointError(f"{self.last}: not a training checkpoint of this version (no {', '.join(missing)})")
        changed = _differences(resumable(ckpt["config"]) | ckpt["identity"], resumable(run.config) | run.identity)
        if changed:
            raise RunError(
                f"--resume: {self.last} was made with other settings, which exact resumption needs unchanged: "
                f"{'; '.join(changed)} (use the same settings, or a new --out to start afresh)"
            )
        try:
            run.model.load_state_dict(ckpt["model"])
            run.optimizer.load_state_dict(ckpt["optimizer"])
            run.schedule.load_state_dict(ckpt["schedule"])
            rng = ckpt["rng"][run.rank]
            torch.set_rng_state(rng["cpu"])
            if run.device.type == "cuda" and rng.get("cuda") is not None:
                torch.cuda.set_rng_state(rng["cuda"], run.device)
            progress = fresh_progress() | ckpt["progress"]
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as e:
            raise CheckpointError(f"{self.last}: does not fit this run ({str(e).strip().splitlines()[0]})") from None
        return progress

    def best_weights(self) -> Optional[dict]:
        if not self.best.exists():
            return None
        best = load_checkpoint(self.best)
        if not isinstance(best, dict) or not isinstance(best.get("model"), dict):
            raise CheckpointError(f"{self.best}: not a best-weights checkpoint (no model state dict)")
        return best["model"]


# ---- the step and evaluation ----


def forward(model, batch, device, amp_dtype):
    kwargs = {k: batch[k].to(device, non_blocking=True) for k in ("x", "mask", "x2", "mask2") if k in batch}
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(**kwargs)
    return logits.float()


def train_step(run: Run, batch) -> tuple:
    """One optimiser step on ``batch``: (loss, correct predictions, applied). A step whose loss or
    gradient is not finite on any rank is skipped on every rank: no update, and the norms'
    running statistics put back as they were before its forward."""
    model, grad_clip = run.model, run.config["optim"]["grad_clip"]
    buffers = list(model.buffers())
    saved = [b.clone() for b in buffers]
    logits = forward(run.train_net, batch, run.device, run.amp_dtype)
    y = batch["y"].to(run.device)
    loss = F.cross_entropy(logits, y)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=run.device)
    finite = torch.isfinite(loss.detach() + norm).float()
    if run.size > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    applied = bool(finite.item())
    if applied:
        if grad_clip:
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, norm)
        run.optimizer.step()
    else:
        with torch.no_grad():
            torch._foreach_copy_(buffers, saved)
    run.schedule.step()
    return loss.item(), (logits.argmax(-1) == y).sum().item(), applied


@torch.no_grad()
def evaluate(model, split, batch_size, device, amp_dtype, rank, size):
    model.eval()
    all_batches = lra_data.batches(split.lengths(), batch_size, 0, 0, shuffle=False)
    loss_sum = correct = count = 0.0
    for index in all_batches[rank::size]:
        batch = lra_data.collate(split, index)
        logits = forward(model, batch, device, amp_dtype)
        y = batch["y"].to(device)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        count += len(y)
    model.train()
    loss_sum, correct, count = all_sum([loss_sum, correct, count], device)
    if count == 0:
        raise RunError("evaluation on an empty split")
    return loss_sum / count, correct / count


def majority_rate(split) -> float:
    return float(np.bincount(split.labels).max() / len(split))


# ---- the loop ----


def train(
    config: dict,
    out_dir,
    data_dir=None,
    device: Optional[str] = None,
    max_steps: Optional[int] = None,
    resume: bool = False,
    stop_after: Optional[int] = None,
    cache_dir=None,
    log=print,
) -> dict:
    """Trains per ``config`` (as torch_lru.config.load_config returns it); returns the summary
    (also written to OUT/summary.json).

    ``max_steps`` caps the run (the schedule is laid out over the capped length); ``stop_after``
    ends the process early after saving last.pt, as an interruption would (for tests)."""
    run = set_up(config, out_dir, data_dir, device, max_steps, cache_dir)
    tc = config["train"]
    checkpoints = Checkpoints(run)
    torch.manual_seed(tc["seed"] + 1000 * run.rank + 1)  # dropout streams differ across ranks
    progress = fresh_progress()
    if resume:
        progress = checkpoints.resume()
        log(f"resumed from {checkpoints.last} at step {progress['step']} (epoch {progress['epoch']})")
    metrics = Metrics(run.out, run.rank == 0, resume)
    if resume:
        metrics.drop_after(progress["step"])
    train_split = run.splits["train"]
    if run.rank == 0:
        params = sum(p.numel() for p in run.model.parameters())
        log(
            f"{config['task']}: {len(train_split)} train / {len(run.splits['val'])} val / "
            f"{len(run.splits['test'])} test rows, {params / 1e6:.2f}M parameters, {run.total} steps "
            f"({run.steps_per_epoch} per epoch), batch {tc['batch_size']} x {run.size}, {run.device}"
            f"{', bf16 autocast' if run.amp_dtype else ''}{', compiled' if run.compiled else ''}"
        )

    run.net.train()
    lengths = train_split.lengths()
    clock = CompileClock() if run.compiled else None
    try:
        while progress["step"] < run.total:
            epoch_batches = lra_data.batches(lengths, tc["batch_size"], tc["seed"], progress["epoch"])
            mine = epoch_batches[run.rank :: run.size][: run.steps_per_epoch]
            if len(mine) < run.steps_per_epoch:  # set_up made sure of it; an epoch loop never spins empty
                raise RunError(f"epoch {progress['epoch']} has {len(mine)} batches, expected {run.steps_per_epoch}")
            while progress["position"] < len(mine) and progress["step"] < run.total:
                t0, compiling0 = time.perf_counter(), clock.seconds if clock else 0.0
                batch = lra_data.collate(train_split, mine[progress["position"]])
                loss, correct, applied = train_step(run, batch)
                compiling = (clock.seconds if clock else 0.0) - compiling0
                dt = time.perf_counter() - t0 - compiling
                progress["step"] += 1
                progress["position"] += 1
                progress["train_time"] += dt
                progress["compile_time"] += compiling
                step, window = progress["step"], progress["window"]
                if applied:
                    progress["skipped_in_a_row"] = 0
                    window["loss"] += loss * len(batch["y"])
                    window["correct"] += correct
                    window["count"] += len(batch["y"])
                else:
                    progress["skipped_steps"] += 1
                    progress["skipped_in_a_row"] += 1
                    if run.rank == 0:
                        log(f"  step {step}: the loss ({loss}) or the gradient is not finite; step skipped")
                    if progress["skipped_in_a_row"] >= tc["max_skipped_steps"]:
                        raise NonFiniteLoss(
                            f"loss or gradient not finite in {progress['skipped_in_a_row']} steps in a row (the last "
                            f"at step {step}, loss {loss}): stopping; the last good checkpoint is {checkpoints.kept()}"
                        )
                window["tokens"] += batch["mask"].sum().item()
                window["time"] += dt
                if step % tc["log_every"] == 0 or step == run.total:
                    log_window(run, progress, metrics, log)
                if step % run.eval_every == 0 or step == run.total:
                    evaluate_and_save(run, progress, metrics, checkpoints, log)
                if stop_after is not None and step >= stop_after:
                    if step % run.eval_every != 0:
                        checkpoints.save_last(progress)
                    return {"stopped_at": step}
            progress["epoch"] += 1
            progress["position"] = 0
        return finish(run, progress, metrics, checkpoints, log)
    finally:
        if clock is not None:
            clock.close()


def log_window(run: Run, progress: dict, metrics: Metrics, log) -> None:
    """One train row of metrics.csv (and a log line) for the steps since the last one."""
    w = progress["window"]
    loss_sum, correct, count, tokens, seconds = all_sum(
        [w["loss"], w["correct"], w["count"], w["tokens"], w["time"]], run.device
    )
    step, total = progress["step"], run.total
    tok_s = tokens / max(seconds / run.size, 1e-9)
    lr = run.optimizer.param_groups[0]["lr"]
    loss, accuracy = (loss_sum / count, correct / count) if count else (float("nan"), float("nan"))
    metrics.write(step, "train", loss, accuracy, lr, tok_s)
    if run.rank == 0:
        eta = (total - step) * progress["train_time"] / max(step, 1)
        bar = "#" * int(20 * step / total)
        log(
            f"[{bar:<20}] step {step}/{total} epoch {progress['epoch']} | loss {loss:.4f} acc {accuracy:.3f} | "
            f"lr {lr:.2e} | {tok_s / 1e3:.1f}k tok/s | eta {eta / 60:.1f} min"
        )
    progress["window"] = fresh_window()


def evaluate_and_save(run: Run, progress: dict, metrics: Metrics, checkpoints: Checkpoints, log) -> None:
    """The validation split; best.pt when it is the best so far; last.pt. A non-finite validation
    loss stops the run with the checkpoints as they were."""
    step = progress["step"]
    tc = run.config["train"]
    val_loss, val_acc = evaluate(
        run.net, run.splits["val"], tc["batch_size"], run.device, run.amp_dtype, run.rank, run.size
    )
    metrics.write(step, "val", val_loss, val_acc, run.optimizer.param_groups[0]["lr"])
    if not math.isfinite(val_loss):
        raise NonFiniteLoss(
            f"the validation loss is {val_loss} at step {step}: stopping; the last good checkpoint is "
            f"{checkpoints.kept()}"
        )
    if run.rank == 0:
        log(f"  val loss {val_loss:.4f} acc {val_acc:.4f} (best {max(progress['best_val'], val_acc):.4f})")
    checkpoints.check_finite(step)
    if val_acc > progress["best_val"]:
        progress["best_val"], progress["best_step"] = val_acc, step
        checkpoints.save_best(step, val_acc)
    checkpoints.save_last(progress)


# ---- the finish ----


def finish(run: Run, progress: dict, metrics: Metrics, checkpoints: Checkpoints, log) -> dict:
    """The test split at the best validation checkpoint (the S4/S5 reporting convention), the
    summary, the best weights as a plain state dict and the curves."""
    best = checkpoints.best_weights()
    if run.size > 1:
        dist.barrier()
    final_model = copy.deepcopy(run.model)
    if best is not None:
        final_model.load_state_dict(best)
    tc = run.config["train"]
    test_loss, test_acc = evaluate(
        final_model, run.splits["test"], tc["batch_size"], run.device, run.amp_dtype, run.rank, run.size
    )
    summary = {
        "task": run.config["task"],
        "steps": progress["step"],
        "best_step": progress["best_step"],
        "best_val_accuracy": progress["best_val"],
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "majority_val": majority_rate(run.splits["val"]),
        "majority_test": majority_rate(run.splits["test"]),
        "skipped_steps": progress["skipped_steps"],
        "parameters": sum(p.numel() for p in final_model.parameters()),
        "train_time_s": progress["train_time"],
        "compiled": run.compiled,
        "compile_time_s": progress["compile_time"],
        "device": str(run.device),
        "world_size": run.size,
        "config": run.config,
    }
    if run.rank == 0:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=1))
        save_state_dict(final_model, run.out / "best_model.pt")  # the best weights, readable from C++ too
        plot_curves(metrics.path, run.out / "curves.png")
        log(
            f"best val accuracy {summary['best_val_accuracy']:.4f} at step {summary['best_step']}; test accuracy "
            f"{test_acc:.4f} (majority class: val {summary['majority_val']:.4f}, test {summary['majority_test']:.4f})"
        )
    if run.size > 1:
        dist.barrier()  # every rank leaves after rank 0 has written its files
    return summary
