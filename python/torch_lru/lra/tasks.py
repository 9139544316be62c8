"""The LRA tasks: their classes and inputs, and which reader (each next to its format: listops.py,
text.py, retrieval.py, cifar.py, fmnist.py, pathfinder.py) reads their files.
``load_splits(task, data_dir, options)`` returns train/val/test Splits.

Layouts (as the LRA release archive unpacks, or as scripts/make_lra_data.py writes them):
- listops:    DIR/basic_{train,val,test}.tsv
- text:       DIR/{train,test}/{pos,neg}/<id>_<rating>.txt (aclImdb), or a user's export
              DIR/{train,test}.tsv with the header "label<TAB>text"; the test split is also the
              validation split (the S4/S5 convention, LRA has no IMDB validation set)
- retrieval:  DIR/new_aan_pairs.{train,eval,test}.tsv: label, id1, id2, text1, text2
- image:      DIR/data_batch_{1..5}, DIR/test_batch (CIFAR-10 python batches); the last 10% of the
              training batches is the validation split
- fmnist:     DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (default: Debian's
              dataset-fashion-mnist, /usr/share/datasets/fashion-mnist); last 10% of train = val
- pathfinder, pathx: DIR/metadata/*.npy (text lines: folder, file name, _, label) and the PNGs
              they name; a seeded 80/10/10 split

Every task also takes data.{train,val,test}_rows: keep that many rows of the split (a fixed-seed
subset, the same in every run), for budgets on small machines.
"""

from pathlib import Path

import numpy as np

from . import cifar, fmnist, listops, pathfinder, retrieval, text
from .data import BYTE_VOCAB, Split
from .errors import DataError

FMNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

# Per task: classes, token vocabulary (0: real-valued inputs) and channels per step.
TASKS = {
    "listops": {"n_classes": 10, "vocab_size": len(listops.VOCAB), "channels": 0, "dual": False},
    "text": {"n_classes": 2, "vocab_size": BYTE_VOCAB, "channels": 0, "dual": False},
    "retrieval": {"n_classes": 2, "vocab_size": BYTE_VOCAB, "channels": 0, "dual": True},
    "image": {"n_classes": 10, "vocab_size": 0, "channels": 1, "dual": False},
    "fmnist": {"n_classes": 10, "vocab_size": 0, "channels": 1, "dual": False},
    "pathfinder": {"n_classes": 2, "vocab_size": 0, "channels": 1, "dual": False},
    "pathx": {"n_classes": 2, "vocab_size": 0, "channels": 1, "dual": False},
}


def task_info(task: str) -> dict:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; the tasks are {', '.join(TASKS)}")
    return TASKS[task]


READERS = {
    "listops": listops.read_splits,
    "text": text.read_splits,
    "retrieval": retrieval.read_splits,
    "image": cifar.read_splits,
    "fmnist": fmnist.read_splits,
    "pathfinder": pathfinder.read_splits,
    "pathx": pathfinder.read_splits,
}


def resolve_data_dir(task: str, data_dir) -> Path:
    """The task's data folder: ``data_dir``, or the task's default (Fashion-MNIST: Debian's)."""
    task_info(task)
    if not data_dir and task != "fmnist":
        raise ValueError(f"task {task!r} needs --data-dir")
    folder = Path(data_dir) if data_dir else FMNIST_DEBIAN
    if not folder.is_dir():
        hint = " (apt-get install dataset-fashion-mnist provides them)" if task == "fmnist" else ""
        raise DataError(folder, f"not a folder (expected the {task} files in their official layout{hint})")
    return folder


def load_splits(task: str, data_dir, options: dict = None, cache_dir=None) -> dict[str, Split]:
    data_dir = resolve_data_dir(task, data_dir)
    opts = dict(options or {})
    limits = {name: opts.pop(f"{name}_rows", None) for name in ("train", "val", "test")}
    splits = READERS[task](data_dir, opts, cache_dir)
    return {name: _limit_rows(split, limits[name], name) for name, split in splits.items()}


def _limit_rows(split: Split, rows, name: str) -> Split:
    """At most ``rows`` rows of a split (data.<name>_rows), drawn with a fixed seed so that every run
    that sets the same limit sees the same rows; a budget for small machines, reported as such."""
    if rows is None or int(rows) >= len(split):
        return split
    if int(rows) < 1:
        raise ValueError(f"data.{name}_rows must be >= 1, got {rows}")
    index = np.sort(np.random.default_rng(0).choice(len(split), size=int(rows), replace=False))
    return split.subset(index)
