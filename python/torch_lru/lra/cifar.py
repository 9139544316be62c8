"""LRA Image: CIFAR-10's python batches (DIR/data_batch_{1..5}, DIR/test_batch) as sequences of
1,024 pixels, grey (LRA) or colour (3 channels per step); the last 10% of the training batches is
the validation split.
"""

import pickle
from pathlib import Path

import numpy as np

from .data import Split, cached, holdout, need, nonempty, pack
from .errors import DataError


def _cifar_batch(path: Path, grey: bool) -> list[tuple[np.ndarray, int]]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = np.asarray(batch[b"data"], dtype=np.uint8), list(batch[b"labels"])
    except (pickle.UnpicklingError, KeyError, EOFError, TypeError) as e:
        raise DataError(path, f"not a CIFAR-10 python batch (dict with b'data' (n, 3072) and b'labels'): {e}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(path, f"expected b'data' of shape (n, 3072) and n labels, got {data.shape} and {len(labels)}")
    rgb = data.reshape(-1, 3, 1024).transpose(0, 2, 1)  # (n, 1024 steps, 3 channels), row-major pixels
    if grey:  # LRA: one 8-bit intensity per pixel
        rgb = np.round(rgb @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)[..., None]
    return list(zip(rgb, labels))


def read_splits(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    grey = bool(opts.get("grayscale", True))
    channels = 1 if grey else 3
    train_files = [
        need(data_dir / f"data_batch_{i}", "CIFAR-10's cifar-10-batches-py/data_batch_{1..5}") for i in range(1, 6)
    ]
    test_file = need(data_dir / "test_batch", "CIFAR-10's cifar-10-batches-py/test_batch")

    def build(files):
        rows = [row for f in files for row in _cifar_batch(f, grey)]
        return nonempty(pack(rows, channels=channels), files[-1], "images")

    train = cached("image", train_files, {"grey": grey}, lambda: build(train_files), cache_dir)
    test = cached("image", [test_file], {"grey": grey}, lambda: build([test_file]), cache_dir)
    return {**holdout(train, 0.1, data_dir / "data_batch_5"), "test": test}
