"""Generates LRA data in the official file layout, so that the readers are the only way data
enters training.

    scripts/python scripts/make_lra_data.py --task listops --out data/listops [--train 96000 --val 2000 --test 2000]
        [--min-length 500 --max-length 2000] [--seed 0] [--workers 2]
    scripts/python scripts/make_lra_data.py --task pathfinder --out data/pathfinder32 [--train N ...]
    scripts/python scripts/make_lra_data.py --task pathx --out data/pathfinder128

An existing folder with the same settings is left as it is (a second run reuses it). A folder this
script generated with other settings (or did not finish) is emptied of what it wrote and written
afresh; any other non-empty folder is refused, so that no official data is overwritten.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

# split sizes per task when not given: LRA's
DEFAULT_SIZES = {"listops": (96000, 2000, 2000), "pathfinder": (160000, 20000, 20000), "pathx": (160000, 20000, 20000)}
STAMP = "generated.json"


def count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def clear_generated(out: Path, task: str) -> None:
    """Removes what an earlier run of this script wrote into ``out`` (its stamp says it made it)."""
    if task == "listops":
        for name in ("basic_train.tsv", "basic_val.tsv", "basic_test.tsv"):
            (out / name).unlink(missing_ok=True)
    else:
        for folder in ("imgs", "metadata"):
            shutil.rmtree(out / folder, ignore_errors=True)
    (out / STAMP).unlink(missing_ok=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=sorted(DEFAULT_SIZES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=count, help="rows (ListOps) or images (Pathfinder) in the train split")
    ap.add_argument("--val", type=count)
    ap.add_argument("--test", type=count)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=count, default=1)
    ap.add_argument("--min-length", type=int, default=500, help="ListOps: keep trees longer than this")
    ap.add_argument("--max-length", type=int, default=2000, help="ListOps: keep trees shorter than this")
    ap.add_argument("--contour-length", type=count, default=14, help="Pathfinder: paddles per target contour")
    args = ap.parse_args()
    sizes = tuple(
        given or default for given, default in zip((args.train, args.val, args.test), DEFAULT_SIZES[args.task])
    )
    if args.task == "listops":
        from torch_lru.lra import listops

        try:
            listops.check_lengths(args.min_length, args.max_length)
        except ValueError as e:
            ap.error(f"--min-length {args.min_length} --max-length {args.max_length}: {e}")

    out = Path(args.out)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "workers")}
    stamp = out / STAMP
    if stamp.exists():
        try:
            done = json.loads(stamp.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            done = None
        if done == settings:
            print(f"{out}: already generated with these settings")
            return 0
        clear_generated(out, args.task)  # ours, made with other settings or left unfinished
    elif out.exists() and any(out.iterdir()):
        sys.exit(f"make_lra_data.py: {out} holds files this script did not write; give an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"unfinished": settings}))  # ours from now on, even if interrupted

    t0 = time.time()
    try:
        if args.task == "listops":
            paths = listops.write_splits(
                out, sizes, args.seed, args.workers, min_length=args.min_length, max_length=args.max_length
            )
            print(f"wrote {', '.join(str(p) for p in paths)} ({sum(sizes)} expressions, {time.time() - t0:.0f} s)")
        else:
            from torch_lru.lra import pathfinder

            level = pathfinder.LEVELS[args.task]
            pathfinder.write_dataset(
                out, sum(sizes), level, seed=args.seed, workers=args.workers, contour_length=args.contour_length
            )
            print(f"wrote {sum(sizes)} images under {out} ({time.time() - t0:.0f} s)")
    except (ValueError, RuntimeError) as e:
        sys.exit(f"make_lra_data.py: {e}")
    stamp.write_text(json.dumps(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
