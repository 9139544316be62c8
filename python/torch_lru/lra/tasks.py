"""The LRA tasks: where each reads its files (the official layouts), how it tokenises them and how
its splits are made. ``load_splits(task, data_dir, options)`` returns train/val/test Splits.

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

import csv
import gzip
import pickle
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from . import listops
from .data import Split, cached, pack
from .errors import DataError, text_lines

BYTE_VOCAB = 257  # byte b is token b + 1; 0 is padding
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


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(path, f"not found (expected {what})")
    return path


def _nonempty(split: Split, path: Path, what: str) -> Split:
    """Every split a reader returns holds at least one row."""
    if len(split) == 0:
        raise DataError(path, f"holds no {what}")
    return split


def _bytes(text: str, max_length: int) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8")[:max_length], dtype=np.uint8).astype(np.uint16) + 1


# ---- ListOps ----


def _listops(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    out = {}
    for split in listops.SPLITS:
        path = _need(data_dir / f"basic_{split}.tsv", "LRA's listops-1000/basic_{train,val,test}.tsv")
        build = lambda p=path: _nonempty(pack(listops.read_tsv(p)), p, "expressions after its header")  # noqa: E731
        out[split] = cached("listops", [path], {}, build, cache_dir)
    return out


# ---- Text (IMDB, byte level) ----


def _imdb_files(folder: Path) -> list[tuple[Path, int]]:
    """(review file, label) of an aclImdb split folder, negatives first."""
    out = []
    for label, name in ((0, "neg"), (1, "pos")):
        sub = _need(folder / name, "aclImdb's {train,test}/{pos,neg}/ folders")
        files = sorted(sub.glob("*.txt"))
        if not files:
            raise DataError(sub, "no <id>_<rating>.txt reviews in this folder")
        out += [(f, label) for f in files]
    return out


def _imdb_rows(files: list[tuple[Path, int]], max_length: int) -> Iterator[tuple[np.ndarray, int]]:
    for f, label in files:
        yield _bytes(f.read_text(encoding="utf-8", errors="replace"), max_length), label


def _tsv_rows(path: Path, max_length: int) -> Iterator[tuple[np.ndarray, int]]:
    """A user's export: header ``label<TAB>text``, then one review per line, label 0 or 1."""
    csv.field_size_limit(sys.maxsize)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if lineno == 1:
                if fields != ["label", "text"]:
                    raise DataError(path, f"expected the header 'label<TAB>text', got {fields!r}", lineno)
                continue
            if not fields:
                continue
            if len(fields) != 2 or fields[0] not in ("0", "1"):
                raise DataError(path, "expected 'label<TAB>text' with label 0 or 1", lineno)
            yield _bytes(fields[1], max_length), int(fields[0])


def _text(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    max_length = int(opts.get("max_length", 4096))
    out = {}
    if (data_dir / "train.tsv").exists():
        for split in ("train", "test"):
            path = _need(data_dir / f"{split}.tsv", "train.tsv and test.tsv (label<TAB>text)")
            build = lambda p=path: _nonempty(pack(_tsv_rows(p, max_length), dtype=np.uint16), p, "reviews")  # noqa: E731
            out[split] = cached("text-tsv", [path], {"max_length": max_length}, build, cache_dir)
        out["val"] = out["test"]
        return out
    for split in ("train", "test"):
        folder = _need(data_dir / split, "the aclImdb layout DIR/{train,test}/{pos,neg}/*.txt")
        files = _imdb_files(folder)
        build = lambda f=files: pack(_imdb_rows(f, max_length), dtype=np.uint16)  # noqa: E731
        out[split] = cached("text", [f for f, _ in files], {"max_length": max_length}, build, cache_dir)
    out["val"] = out["test"]
    return out


# ---- Retrieval (AAN pairs, byte level) ----


def _aan_rows(path: Path, max_length: int):
    csv.field_size_limit(sys.maxsize)
    first, second = [], []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not fields:
                continue
            if len(fields) != 5:
                raise DataError(
                    path, f"expected 5 tab-separated fields (label, id1, id2, text1, text2), got {len(fields)}", lineno
                )
            try:
                label = int(float(fields[0]))
            except ValueError:
                raise DataError(
                    path, f"expected a label 0 or 1 in the first column, got {fields[0]!r}", lineno
                ) from None
            if label not in (0, 1):
                raise DataError(path, f"expected a label 0 or 1 in the first column, got {fields[0]!r}", lineno)
            first.append((_bytes(fields[3], max_length), label))
            second.append((_bytes(fields[4], max_length), label))
    if not first:
        raise DataError(path, "no rows")
    split = pack(first, dtype=np.uint16)
    split.second = pack(second, dtype=np.uint16)
    return split


def _retrieval(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    max_length = int(opts.get("max_length", 4000))
    out = {}
    for split, name in (("train", "train"), ("val", "eval"), ("test", "test")):
        path = _need(data_dir / f"new_aan_pairs.{name}.tsv", "LRA's tsv_data/new_aan_pairs.{train,eval,test}.tsv")
        build = lambda p=path: _aan_rows(p, max_length)  # noqa: E731
        out[split] = cached("retrieval", [path], {"max_length": max_length}, build, cache_dir)
    return out


# ---- Image (CIFAR-10) ----


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


def _image(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    grey = bool(opts.get("grayscale", True))
    channels = 1 if grey else 3
    train_files = [
        _need(data_dir / f"data_batch_{i}", "CIFAR-10's cifar-10-batches-py/data_batch_{1..5}") for i in range(1, 6)
    ]
    test_file = _need(data_dir / "test_batch", "CIFAR-10's cifar-10-batches-py/test_batch")

    def build(files):
        rows = [row for f in files for row in _cifar_batch(f, grey)]
        return _nonempty(pack(rows, channels=channels), files[-1], "images")

    train = cached("image", train_files, {"grey": grey}, lambda: build(train_files), cache_dir)
    test = cached("image", [test_file], {"grey": grey}, lambda: build([test_file]), cache_dir)
    return {**_holdout(train, 0.1, data_dir / "data_batch_5"), "test": test}


# ---- Sequential Fashion-MNIST (784 steps) ----


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


def _fmnist(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
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
    return {**_holdout(out["train"], 0.1, _find(data_dir, "train-images-idx3-ubyte")), "test": out["test"]}


# ---- Pathfinder / Path-X ----


@dataclass(frozen=True)
class ImageEntry:
    """One line of a Pathfinder metadata file: where it is, the image it names, and its label."""

    meta: Path
    line: int
    image: Path
    label: int


def list_pathfinder(root: Path) -> list[ImageEntry]:
    """Every image the metadata files list, checked: each line well formed, each image a file
    inside ``root`` (no '..' or absolute path leads out of it, nor a link), at least one image."""
    meta_dir = _need(root / "metadata", "the Pathfinder layout DIR/{imgs/<batch>/sample_<i>.png, metadata/<batch>.npy}")
    files = sorted(meta_dir.glob("*.npy"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise DataError(meta_dir, "no metadata/<batch>.npy files")
    inside = root.resolve()
    entries = []
    for meta in files:
        for lineno, line in text_lines(meta):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4 or fields[3] not in ("0", "1"):
                raise DataError(meta, "expected 'folder file _ label ...' with label 0 or 1", lineno)
            image = (root / fields[0] / fields[1]).resolve()
            if not image.is_relative_to(inside):
                raise DataError(
                    meta, f"names {fields[0]}/{fields[1]}, which lies outside the data folder {inside}", lineno
                )
            if not image.is_file():
                raise DataError(meta, f"lists {root / fields[0] / fields[1]}, which does not exist", lineno)
            entries.append(ImageEntry(meta, lineno, image, int(fields[3])))
    if not entries:
        raise DataError(meta_dir, "the metadata files list no images")
    return entries


def read_pathfinder(root: Path, entries: Optional[list[ImageEntry]] = None) -> Iterator[tuple[np.ndarray, int]]:
    """(pixels (H*W, 1), label) for every image the metadata files list, all of one size; the
    empty image of the official release is skipped."""
    from PIL import Image, UnidentifiedImageError  # pillow, a dependency of matplotlib

    shape = None
    for e in entries if entries is not None else list_pathfinder(root):
        if e.image.stat().st_size == 0:
            continue  # the release's known empty file (pathfinder32/curv_baseline/imgs/0/sample_172.png)
        try:
            with Image.open(e.image) as im:
                pixels = np.asarray(im.convert("L"), dtype=np.uint8)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            raise DataError(e.meta, f"cannot read the image {e.image}: {err}", e.line) from None
        if shape is None:
            shape = pixels.shape
        elif pixels.shape != shape:
            raise DataError(
                e.meta,
                f"{e.image} is {pixels.shape[1]}x{pixels.shape[0]} pixels, the images before it "
                f"{shape[1]}x{shape[0]} (one task has one image size)",
                e.line,
            )
        yield pixels.reshape(-1, 1), e.label


def _pathfinder(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    entries = list_pathfinder(data_dir)
    # The cache covers the metadata files and every image they list.
    sources = sorted({e.meta for e in entries}) + [e.image for e in entries]
    build = lambda: pack(read_pathfinder(data_dir, entries), channels=1)  # noqa: E731
    every = cached("pathfinder", sources, {}, build, cache_dir)
    if len(every) < 10:
        raise DataError(
            data_dir / "metadata", f"lists {len(every)} readable images; the 80/10/10 split needs at least 10"
        )
    rng = np.random.default_rng(int(opts.get("split_seed", 0)))
    order = rng.permutation(len(every))
    n_val = n_test = len(every) // 10
    return {
        "train": every.subset(order[n_val + n_test :]),
        "val": every.subset(order[:n_val]),
        "test": every.subset(order[n_val : n_val + n_test]),
    }


def _holdout(train: Split, fraction: float, source: Path) -> dict[str, Split]:
    n_val = int(round(len(train) * fraction))
    if n_val < 1 or n_val >= len(train):
        raise DataError(source, f"holds {len(train)} rows, too few to hold out {fraction:.0%} for validation")
    index = np.arange(len(train))
    return {"train": train.subset(index[: len(train) - n_val]), "val": train.subset(index[len(train) - n_val :])}


READERS = {
    "listops": _listops,
    "text": _text,
    "retrieval": _retrieval,
    "image": _image,
    "fmnist": _fmnist,
    "pathfinder": _pathfinder,
    "pathx": _pathfinder,
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
