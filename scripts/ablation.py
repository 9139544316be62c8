"""The paper's ablation walk at a scale a small machine finishes: every recurrent layer of
torch_lru.layers in the same block, on the same data, with the same budget, over several seeds.

    scripts/python scripts/ablation.py --out runs/ablation [--tasks fmnist,listops] [--seeds 0,1,2]
        [--layers tanh_rnn,...] [--steps fmnist=500,listops=1200 | 300] [--device cpu]
        [--listops-dir data/listops_small] [--fmnist-dir /usr/share/datasets/fashion-mnist] [--set key=value ...]

Each run is torch_lru.train on the task's reduced config (fmnist: a 2-layer model of width 32;
listops: listops_small), with model.layer set (and for "hawk", Hawk's block: the rglru layer in
HawkBlock with RMSNorm); the schedule spans the task's --steps (one number
for every task, or task=steps pairs). Sequential Fashion-MNIST is validated on 1000 and tested on
5000 fixed rows (data.val_rows, data.test_rows) to bound evaluation on a small machine. Writes OUT/results.json,
OUT/table.md (mean +- std of test accuracy at the best validation checkpoint, per layer and task)
and OUT/ablation.png (the paper's figure: accuracy per layer, S4D and S5 as dashed lines). Runs
already finished (OUT/<task>/<layer>/seed<k>/summary.json) are reused.
"""

import argparse
import json
import statistics
from pathlib import Path

from torch_lru import train as training
from torch_lru.layers import LAYERS

WALK = ("tanh_rnn", "linear_dense", "diag_complex", "diag_exp", "lru")  # the paper's order
BASELINES = ("s4d", "s5")
SUCCESSORS = ("rglru", "hawk")  # Griffin's gated recurrence, in the LRU's block and in Hawk's
# Rows that are more than a layer choice: their overrides.
VARIANTS = {"hawk": ["model.layer=rglru", "model.block=hawk", "model.norm=rms"]}
# The reduced model of each task: one budget for every layer.
REDUCED = {
    "fmnist": (
        "fmnist",
        ["model.d_model=32", "model.d_state=32", "model.n_layers=2", "train.batch_size=32"]
        + ["data.val_rows=1000", "data.test_rows=5000"],
    ),
    "listops": ("listops_small", ["model.d_model=32", "model.d_state=32", "model.n_layers=2"]),
}


def run_one(task, layer, seed, args):
    out = Path(args.out) / task / layer / f"seed{seed}"
    done = out / "summary.json"
    if done.exists():
        try:
            return json.loads(done.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            print(f"{done}: unreadable; running again", flush=True)
    name, overrides = REDUCED[task]
    steps = args.steps[task]
    config = training.load_config(
        name,
        overrides
        + VARIANTS.get(layer, [f"model.layer={layer}"])
        + [f"train.seed={seed}", f"train.eval_every={max(steps // 5, 1)}"]
        + args.set,
    )
    data_dir = args.fmnist_dir if task == "fmnist" else args.listops_dir
    print(f"== {task} / {layer} / seed {seed}", flush=True)
    try:
        return training.train(config, out, data_dir, args.device, max_steps=steps, log=lambda *_: None)
    except training.NonFiniteLoss as e:  # an unstable layer is a result too
        summary = {"task": task, "failed": str(e), "test_accuracy": float("nan"), "best_val_accuracy": float("nan")}
        out.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(summary))
        return summary


def parse_steps(spec: str, tasks) -> dict:
    """'300' (every task) or 'fmnist=500,listops=1200' -> {task: steps}."""
    if "=" not in spec:
        return dict.fromkeys(tasks, int(spec))
    steps = {k: int(v) for k, v in (item.split("=", 1) for item in spec.split(","))}
    missing = [t for t in tasks if t not in steps]
    if missing:
        raise SystemExit(f"--steps {spec!r} gives no budget for {', '.join(missing)}")
    return steps


def stats(values):
    finite = [v for v in values if v == v]
    if not finite:
        return float("nan"), float("nan"), len(values)
    return statistics.mean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0, len(values) - len(finite)


def plot(results, tasks, layers, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        walk = [name for name in layers if name in WALK]
        means = [results[task][name]["mean"] for name in walk]
        stds = [results[task][name]["std"] for name in walk]
        ax.errorbar(range(len(walk)), means, yerr=stds, marker="o", capsize=3, label="recurrent-block walk")
        for i, name in enumerate(walk):  # diverged seeds have no point: say how many
            r = results[task][name]
            if r["failed"]:
                ax.annotate(
                    f"{r['failed']} of {r['runs']} diverged",
                    (i, 0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, 6),
                    textcoords="offset points",
                    ha="center",
                    fontsize=8,
                    color="red",
                )
        majority = results[task][layers[0]].get("majority")
        if majority:
            ax.axhline(majority, color="black", linewidth=0.8, label="majority class")
        for name, style in zip(BASELINES, ("--", ":")):
            if name in results[task]:
                ax.axhline(results[task][name]["mean"], linestyle=style, color="grey", label=name.upper())
        for name, style in zip(SUCCESSORS, ("--", ":")):
            if name in results[task]:
                ax.axhline(results[task][name]["mean"], linestyle=style, color="tab:green", label=name)
        ax.set_xticks(range(len(walk)), walk, rotation=20)
        ax.set_ylabel("test accuracy")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default="fmnist,listops")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--layers", default=",".join((*LAYERS, *VARIANTS)), help="layer names, and 'hawk'")
    ap.add_argument("--steps", default="fmnist=500,listops=1200")
    ap.add_argument("--device", default=None)
    ap.add_argument("--listops-dir", default="data/listops_small")
    ap.add_argument("--fmnist-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    tasks, layers = args.tasks.split(","), args.layers.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.steps = parse_steps(args.steps, tasks)

    results = {}
    for task in tasks:
        results[task] = {}
        for layer in layers:
            runs = [run_one(task, layer, seed, args) for seed in seeds]
            mean, std, failed = stats([r["test_accuracy"] for r in runs])
            results[task][layer] = {
                "mean": mean,
                "std": std,
                "failed": failed,
                "runs": len(runs),
                "majority": runs[0].get("majority_test"),
            }
            print(f"{task:8} {layer:13} test accuracy {mean:.4f} +- {std:.4f} ({failed} failed of {len(runs)})")
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps({"steps": args.steps, "seeds": seeds, "results": results}, indent=1))
    lines = ["| layer | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for layer in layers:
        cells = []
        for task in tasks:
            r = results[task][layer]
            if r["failed"] == r["runs"]:
                cells.append(f"diverged in {r['runs']} of {r['runs']} seeds")
                continue
            cell = f"{r['mean']:.3f} ± {r['std']:.3f}"
            cells.append(cell + (f" ({r['failed']} of {r['runs']} diverged)" if r["failed"] else ""))
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    majority = [results[t][layers[0]]["majority"] for t in tasks]
    lines.append("| majority class | " + " | ".join(f"{m:.3f}" if m else "-" for m in majority) + " |")
    lines.append("| steps per run | " + " | ".join(str(args.steps[t]) for t in tasks) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(results, tasks, layers, out / "ablation.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
