"""Trains an LRUModel on a Long Range Arena task (the loop is torch_lru.train).

    scripts/python scripts/train_lra.py --task listops --data-dir data/listops --out runs/listops
    torchrun --nproc-per-node 8 scripts/train_lra.py --task image --data-dir cifar-10-batches-py --out runs/image

--config is a JSON file or the name of a packaged config (python/torch_lru/lra/configs/: listops,
text, retrieval, image, pathfinder, pathx, fmnist, listops_small; default: the task's own);
--set key.sub=value overrides one entry (e.g. --set train.batch_size=16 --set model.dropout=0.1).
"""

import argparse
import sys

import torch

from torch_lru import train as training
from torch_lru.checkpoint import CheckpointError
from torch_lru.config import ConfigError
from torch_lru.lra.errors import DataError


def steps(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--task", help="listops, text, retrieval, image, fmnist, pathfinder or pathx (default: the config's)"
    )
    ap.add_argument("--config", help="config file or packaged config name (default: the task's)")
    ap.add_argument("--data-dir", help="the task's files, in the official layout")
    ap.add_argument("--out", required=True, help="run folder: metrics.csv, last.pt, best.pt, summary.json, curves.png")
    ap.add_argument("--max-steps", type=steps, help="train for this many steps (the schedule spans them)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    args = ap.parse_args()
    if not (args.task or args.config):
        ap.error("give --task or --config")
    try:
        config = training.load_config(args.config or args.task, args.set)
        if args.task and config["task"] != args.task:
            ap.error(f"--task {args.task} but the config is for {config['task']}")
        training.train(config, args.out, args.data_dir, args.device, args.max_steps, args.resume)
    except (ConfigError, DataError, CheckpointError, training.RunError, FileNotFoundError) as e:
        sys.exit(f"train_lra.py: {e}")
    finally:
        # Under torchrun: shut the process group down before exit (gloo's threads abort otherwise).
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
