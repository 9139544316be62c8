"""Training an LRUModel on an LRA task: the loop behind scripts/train_lra.py, top to bottom.

config (a JSON file, see python/torch_lru/lra/configs/) -> data splits (tasks.load_splits) -> model
-> AdamW with the LRU group apart -> warm-up + cosine schedule -> steps, with evaluation,
metrics.csv, checkpoints (last.pt, best.pt) and, at the end, the test split at the best
checkpoint (summary.json) and the curves (curves.png).

Resuming from last.pt restores the model, optimiser, schedule, random number generators and the
position in the epoch, so an interrupted and resumed run takes the same steps as one that was not.
Under torchrun (WORLD_SIZE > 1) it trains with DistributedDataParallel: each rank takes every
world-th batch, metrics are summed across ranks, and rank 0 writes the files.
"""

import copy
import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .checkpoint import atomic_save, save_state_dict
from .lra import data as lra_data
from .lra import tasks
from .modules import LRUModel

CONFIG_DIR = Path(__file__).resolve().parent / "lra" / "configs"
# The recurrence's own parameters: a smaller learning rate and no weight decay (the paper, after S5).
# The ablation's diagonal layers put theirs here too (eigenvalue parameters, input matrix, time
# steps), so that every layer's recurrence trains under the same rule as the LRU's.
LRU_GROUP = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im", "lam_re", "lam_im", "a_log", "omega", "log_step")


class NonFiniteLoss(RuntimeError):
    pass


# ---- configuration ----


def load_config(path_or_task: str, overrides=()) -> dict:
    """A config file, or a task name (its packaged config), with ``key.sub=value`` overrides."""
    path = Path(path_or_task)
    if not path.exists():
        path = CONFIG_DIR / f"{path_or_task}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise FileNotFoundError(f"no config {path_or_task!r} (a JSON file, or one of: {known})")
    config = json.loads(path.read_text())
    for item in overrides:
        key, _, raw = item.partition("=")
        if not _:
            raise ValueError(f"override {item!r} is not key=value")
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        try:
            node[leaf] = json.loads(raw)
        except json.JSONDecodeError:
            node[leaf] = raw
    return config


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


def build_optimizer(model, optim: dict):
    lru, other_decay, other_no_decay = [], [], []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1].removesuffix("_rev")
        if leaf in LRU_GROUP:
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
    return torch.optim.AdamW(groups, betas=tuple(optim.get("betas", (0.9, 0.999))))


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
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([step, split, f"{loss:.6f}", f"{accuracy:.6f}", f"{lr:.3e}", f"{tokens_per_s:.1f}"])
        if self.writer is not None:
            self.writer.add_scalar(f"{split}/loss", loss, step)
            self.writer.add_scalar(f"{split}/accuracy", accuracy, step)

    def drop_after(self, step: int) -> None:
        """On resume: forget rows written after the checkpoint's step (they will be redone)."""
        if not (self.enabled and self.path.exists()):
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
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


# ---- the loop ----


def forward(model, batch, device, amp_dtype):
    kwargs = {k: batch[k].to(device, non_blocking=True) for k in ("x", "mask", "x2", "mask2") if k in batch}
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(**kwargs)
    return logits.float()


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
    return loss_sum / max(count, 1), correct / max(count, 1)


def majority_rate(split) -> float:
    return float(np.bincount(split.labels).max() / max(len(split), 1))


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
    """Trains per ``config``; returns the summary (also written to OUT/summary.json).

    ``max_steps`` caps the run (the schedule is laid out over the capped length); ``stop_after``
    ends the process early after saving last.pt, as an interruption would (for tests)."""
    rank, size, local_rank = world()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(f"cuda:{local_rank}" if device == "cuda" and size > 1 else device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    tc, oc = config["train"], config["optim"]
    seed = int(tc.get("seed", 0))
    torch.manual_seed(seed)  # the same initial model on every rank

    task = config["task"]
    info = tasks.task_info(task)
    splits = tasks.load_splits(task, data_dir or config.get("data_dir"), config.get("data", {}), cache_dir)
    train_split = splits["train"]
    if train_split.channels:  # pixels per step as read (CIFAR: 1 grey or 3 colour channels)
        info = dict(info, channels=train_split.channels)
    lengths = train_split.lengths()
    batch_size = int(tc["batch_size"])
    n_batches = len(lra_data.batches(lengths, batch_size, seed, 0))
    steps_per_epoch = max(1, n_batches // size)
    total = int(max_steps or tc.get("max_steps") or int(tc["epochs"]) * steps_per_epoch)
    eval_every = int(tc.get("eval_every") or steps_per_epoch)
    log_every = int(tc.get("log_every", 50))
    amp_dtype = torch.bfloat16 if tc.get("amp") == "bf16" and device.type == "cuda" else None

    model = build_model(config, info).to(device)
    optimizer = build_optimizer(model, oc)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, oc.get("warmup_fraction", 0.1), oc.get("min_lr", 1e-7) / oc["lr"])
    )
    net = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if size > 1
        else model
    )

    state = {"step": 0, "epoch": 0, "position": 0, "best_val": -1.0, "best_step": 0, "train_time": 0.0}
    torch.manual_seed(seed + 1000 * rank + 1)  # dropout streams differ across ranks
    last = out / "last.pt"
    if resume:
        if not last.exists():
            raise FileNotFoundError(f"--resume: {last} does not exist")
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"][rank]["cpu"])
        if device.type == "cuda" and ckpt["rng"][rank].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"][rank]["cuda"], device)
        log(f"resumed from {last} at step {state['step']} (epoch {state['epoch']}, batch {state['position']})")
    metrics = Metrics(out, rank == 0, resume)
    if resume:
        metrics.drop_after(state["step"])

    def save_last():
        rng = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        rngs = [None] * size
        if size > 1:
            dist.all_gather_object(rngs, rng)
        else:
            rngs = [rng]
        if rank == 0:
            ckpt = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "state": state,
                "rng": rngs,
                "config": config,
            }
            atomic_save(ckpt, last)
        if size > 1:
            dist.barrier()

    if rank == 0:
        params = sum(p.numel() for p in model.parameters())
        log(
            f"{task}: {len(train_split)} train / {len(splits['val'])} val / {len(splits['test'])} test rows, "
            f"{params / 1e6:.2f}M parameters, {total} steps ({steps_per_epoch} per epoch), "
            f"batch {batch_size} x {size}, {device}{', bf16 autocast' if amp_dtype else ''}"
        )

    net.train()
    window = {"loss": 0.0, "correct": 0.0, "count": 0.0, "tokens": 0.0, "time": 0.0}
    stopped = False
    while state["step"] < total and not stopped:
        epoch_batches = lra_data.batches(lengths, batch_size, seed, state["epoch"])
        mine = epoch_batches[rank::size][:steps_per_epoch]
        while state["position"] < len(mine) and state["step"] < total:
            t0 = time.perf_counter()
            batch = lra_data.collate(train_split, mine[state["position"]])
            logits = forward(net, batch, device, amp_dtype)
            y = batch["y"].to(device)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"loss is {loss.item()} at step {state['step'] + 1}: stopping; the last good checkpoint is "
                    f"{last if last.exists() else 'none (none was written yet)'}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if oc.get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(oc["grad_clip"]))
            optimizer.step()
            schedule.step()
            state["step"] += 1
            state["position"] += 1
            dt = time.perf_counter() - t0
            state["train_time"] += dt
            window["loss"] += loss.item() * len(y)
            window["correct"] += (logits.argmax(-1) == y).sum().item()
            window["count"] += len(y)
            window["tokens"] += batch["mask"].sum().item()
            window["time"] += dt
            step = state["step"]
            if step % log_every == 0 or step == total:
                loss_sum, correct, count, tokens, seconds = all_sum(
                    [window["loss"], window["correct"], window["count"], window["tokens"], window["time"]], device
                )
                tok_s = tokens / max(seconds / size, 1e-9)
                lr = optimizer.param_groups[0]["lr"]
                metrics.write(step, "train", loss_sum / count, correct / count, lr, tok_s)
                if rank == 0:
                    eta = (total - step) * state["train_time"] / max(step, 1)
                    bar = "#" * int(20 * step / total)
                    log(
                        f"[{bar:<20}] step {step}/{total} epoch {state['epoch']} | loss {loss_sum / count:.4f} "
                        f"acc {correct / count:.3f} | lr {lr:.2e} | {tok_s / 1e3:.1f}k tok/s | eta {eta / 60:.1f} min"
                    )
                window = dict.fromkeys(window, 0.0)
            if step % eval_every == 0 or step == total:
                val_loss, val_acc = evaluate(net, splits["val"], batch_size, device, amp_dtype, rank, size)
                metrics.write(step, "val", val_loss, val_acc, optimizer.param_groups[0]["lr"])
                if rank == 0:
                    log(f"  val loss {val_loss:.4f} acc {val_acc:.4f} (best {max(state['best_val'], val_acc):.4f})")
                if val_acc > state["best_val"]:
                    state["best_val"], state["best_step"] = val_acc, step
                    if rank == 0:
                        atomic_save(
                            {"model": model.state_dict(), "step": step, "val_accuracy": val_acc, "config": config},
                            out / "best.pt",
                        )
                save_last()
            if stop_after is not None and step >= stop_after:
                if step % eval_every != 0:
                    save_last()
                stopped = True
                break
        if not stopped:
            state["epoch"] += 1
            state["position"] = 0
    if stopped:
        return {"stopped_at": state["step"]}

    # The test split at the best validation checkpoint (the S4/S5 reporting convention).
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=False) if (out / "best.pt").exists() else None
    if size > 1:
        dist.barrier()
    final_model = copy.deepcopy(model)
    if best is not None:
        final_model.load_state_dict(best["model"])
    test_loss, test_acc = evaluate(final_model, splits["test"], batch_size, device, amp_dtype, rank, size)
    summary = {
        "task": task,
        "steps": state["step"],
        "best_step": state["best_step"],
        "best_val_accuracy": state["best_val"],
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "majority_val": majority_rate(splits["val"]),
        "majority_test": majority_rate(splits["test"]),
        "train_time_s": state["train_time"],
        "device": str(device),
        "world_size": size,
        "config": config,
    }
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        save_state_dict(final_model, out / "best_model.pt")  # the best weights, readable from C++ too
        plot_curves(metrics.path, out / "curves.png")
        log(
            f"best val accuracy {summary['best_val_accuracy']:.4f} at step {summary['best_step']}; test accuracy "
            f"{test_acc:.4f} (majority class: val {summary['majority_val']:.4f}, test {summary['majority_test']:.4f})"
        )
    if size > 1:
        dist.barrier()  # every rank leaves after rank 0 has written its files
    return summary
