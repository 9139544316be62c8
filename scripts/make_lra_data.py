"""Generates LRA data in the official file layout, so that the readers are the only way data
enters training.

    scripts/python scripts/make_lra_data.py --task listops --out data/listops [--train 96000 --val 2000 --test 2000]
        [--min-length 500 --max-length 2000] [--seed 0] [--workers 2]
    scripts/python scripts/make_lra_data.py --task pathfinder --out data/pathfinder32 [--train N ...]
    scripts/python scripts/make_lra_data.py --task pathx --out data/pathfinder128

An existing folder with the same settings is left as it is (a second run reuses it).
"""

import argparse
import json
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=["listops", "pathfinder", "pathx"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int)
    ap.add_argument("--val", type=int)
    ap.add_argument("--test", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--min-length", type=int, default=500, help="ListOps: keep trees longer than this")
    ap.add_argument("--max-length", type=int, default=2000, help="ListOps: keep trees shorter than this")
    ap.add_argument("--contour-length", type=int, default=14, help="Pathfinder: paddles per target contour")
    args = ap.parse_args()
    out = Path(args.out)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "workers")}
    stamp = out / "generated.json"
    if stamp.exists() and json.loads(stamp.read_text()) == settings:
        print(f"{out}: already generated with these settings")
        return
    t0 = time.time()
    if args.task == "listops":
        from torch_lru.lra import listops

        sizes = (args.train or 96000, args.val or 2000, args.test or 2000)
        paths = listops.write_splits(
            out, sizes, args.seed, args.workers, min_length=args.min_length, max_length=args.max_length
        )
        print(f"wrote {', '.join(str(p) for p in paths)} ({sum(sizes)} expressions, {time.time() - t0:.0f} s)")
    else:
        from torch_lru.lra import pathfinder

        n = (args.train or 160000) + (args.val or 20000) + (args.test or 20000)
        level = pathfinder.LEVELS["pathx" if args.task == "pathx" else "pathfinder"]
        pathfinder.write_dataset(
            out, n, level, seed=args.seed, workers=args.workers, contour_length=args.contour_length
        )
        print(f"wrote {n} images under {out} ({time.time() - t0:.0f} s)")
    stamp.write_text(json.dumps(settings))


if __name__ == "__main__":
    sys.exit(main())
