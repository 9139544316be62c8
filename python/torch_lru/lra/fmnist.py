"""Sequential Fashion-MNIST (784 steps): the IDX files DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
(Debian's dataset-fashion-mnist installs them in /usr/share/datasets/fashion-mnist); the last 10% of
the training set is the validation split.
"""

import gzip
from pathlib import Path

import numpy as np

from .data import Split, cached, holdout, pack
from .errors import DataError


def _idx(path: Path, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(path, f"cannot be read ({e})") from None
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x800 + ndim:
        raise DataError(path, f"not an IDX file of {ndim} dimensions (magic {magic:#x}, expected {0x800 + ndim:#x})")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(path, f"holds {data.size} bytes of data, expected {dims} = {int(np.prod(dims))}")
    return data.reshape(dims)


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).exists():
            return data_dir / name
    raise DataError(
        data_dir / stem, "not found (expected Fashion-MNIST's IDX files, e.g. from Debian's dataset-fashion-mnist)"
    )


def read_splits(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = _find(data_dir, f"{prefix}-images-idx3-ubyte"), _find(data_dir, f"{prefix}-labels-idx1-ubyte")

        def build(images=images, labels=labels):
            x, y = _idx(images, 3), _idx(labels, 1)
            if len(x) != len(y):
                raise DataError(labels, f"{len(y)} labels for {len(x)} images in {images}")
            if len(x) == 0:
                raise DataError(images, "holds no images")
            return pack(zip(x.reshape(len(x), -1, 1), y.astype(np.int64)), channels=1)

        out[split] = cached("fmnist", [images, labels], {}, build, cache_dir)
    return {**holdout(out["train"], 0.1, _find(data_dir, "train-images-idx3-ubyte")), "test": out["test"]}
