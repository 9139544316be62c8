"""Tokenised splits, memory-mapped caches and batching shared by every LRA task.

A split is held as one flat array of token ids (or pixel values) with offsets, so reading it costs
no parsing after the first time: the reader's output is written once to a cache directory (keyed
by the path, size, modification and change times of every file the reader reads, and the reader's
options) and memory-mapped afterwards. A cache entry that cannot be read is rebuilt.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .errors import DataError

CACHE_VERSION = 2


def default_cache_dir() -> Path:
    return Path(os.environ.get("TORCH_LRU_CACHE", Path.home() / ".cache" / "torch-lru" / "data"))


@dataclass
class Split:
    """Sequences (token ids or pixels) with labels; ``second`` holds a dual task's other sequences."""

    values: np.ndarray  # flat, uint8 or uint16
    offsets: np.ndarray  # int64, n + 1
    labels: np.ndarray  # int64, n
    channels: int = 0  # 0: token ids; C > 0: pixel values, C per step
    second: Optional["Split"] = None

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        steps = np.diff(self.offsets) // max(self.channels, 1)
        if self.second is not None:
            steps = np.maximum(steps, self.second.lengths())
        return steps

    def item(self, i: int) -> np.ndarray:
        x = self.values[self.offsets[i] : self.offsets[i + 1]]
        return x.reshape(-1, self.channels) if self.channels else x

    def subset(self, index: np.ndarray) -> "Split":
        """A new split holding rows ``index`` (copied into memory)."""
        parts = [self.values[self.offsets[i] : self.offsets[i + 1]] for i in index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        values = np.concatenate(parts) if parts else self.values[:0]
        second = self.second.subset(index) if self.second is not None else None
        return Split(values, offsets, self.labels[index].copy(), self.channels, second)


def pack(rows: Iterable[tuple[np.ndarray, int]], channels: int = 0, dtype=np.uint8) -> Split:
    values, lengths, labels = [], [], []
    for x, label in rows:
        values.append(np.asarray(x, dtype=dtype).reshape(-1))
        lengths.append(values[-1].size)
        labels.append(label)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(values) if values else np.zeros(0, dtype=dtype)
    return Split(flat, offsets, np.asarray(labels, dtype=np.int64), channels)


def _fingerprint(sources: Sequence[Path], options: dict) -> str:
    parts = [f"v{CACHE_VERSION}", json.dumps(options, sort_keys=True)]
    for src in sources:
        try:
            st = os.stat(src)
        except OSError as e:
            raise DataError(src, f"cannot be read ({e.strerror})") from None
        # The change time moves with any rewrite, even one that restores the modification time.
        parts.append(f"{Path(src).resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _save(split: Split, folder: Path, prefix: str = "") -> None:
    np.save(folder / f"{prefix}values.npy", split.values)
    np.save(folder / f"{prefix}offsets.npy", split.offsets)
    np.save(folder / f"{prefix}labels.npy", split.labels)
    if split.second is not None:
        _save(split.second, folder, prefix + "second_")


def _load(folder: Path, channels: int, prefix: str = "") -> Split:
    second = None
    if (folder / f"{prefix}second_values.npy").exists():
        second = _load(folder, channels, prefix + "second_")
    values = np.load(folder / f"{prefix}values.npy", mmap_mode="r")
    offsets = np.load(folder / f"{prefix}offsets.npy")
    labels = np.load(folder / f"{prefix}labels.npy")
    consistent = (
        offsets.ndim == 1
        and len(offsets) == len(labels) + 1
        and offsets[0] == 0
        and offsets[-1] == values.size
        and bool(np.all(np.diff(offsets) >= 0))
    )
    if not consistent:
        raise ValueError(f"{folder}: inconsistent cache entry")
    return Split(values, offsets, labels, channels, second)


def cached(
    name: str,
    sources: Sequence[Path],
    options: dict,
    build: Callable[[], Split],
    cache_dir: Optional[Path] = None,
) -> Split:
    """The split ``build()`` makes, from the cache when none of ``sources`` (every file the reader
    reads) has changed."""
    folder = Path(cache_dir or default_cache_dir()) / f"{name}-{_fingerprint(sources, options)}"
    meta = folder / "meta.json"
    if meta.exists():
        try:
            return _load(folder, json.loads(meta.read_text())["channels"])
        except (OSError, ValueError, KeyError, EOFError):  # a damaged entry: build it again
            shutil.rmtree(folder, ignore_errors=True)
    split = build()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".partial-"))
    try:
        _save(split, tmp)
        (tmp / "meta.json").write_text(json.dumps({"channels": split.channels, "n": len(split), **options}))
        os.replace(tmp, folder)  # atomic; if another process won the race, use its copy
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not meta.exists():
            raise
    return _load(folder, split.channels)


def batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, shuffle: bool = True, bucket: int = 32
) -> list[np.ndarray]:
    """Index batches for one epoch, deterministic in (seed, epoch).

    With ``shuffle``, rows are shuffled, cut into pools of ``bucket`` batches, each pool sorted by
    length (so a batch pads little) and the batches shuffled again. Without, batches are in order.
    """
    n = len(lengths)
    if not shuffle:
        return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    out = []
    pool = batch_size * bucket
    for start in range(0, n, pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(out)
    return out


def _pad(split: Split, index: np.ndarray, multiple: int, length: Optional[int] = None):
    items = [split.item(i) for i in index]
    L = length or max(len(x) for x in items)
    L = -(-L // multiple) * multiple
    if split.channels:
        x = np.zeros((len(items), L, split.channels), dtype=np.float32)
    else:
        x = np.zeros((len(items), L), dtype=np.int64)
    mask = np.zeros((len(items), L), dtype=bool)
    for row, item in enumerate(items):
        x[row, : len(item)] = item
        mask[row, : len(item)] = True
    return x, mask


def collate(split: Split, index: np.ndarray, multiple: int = 16) -> dict:
    """A padded batch: ``x`` (B, L) token ids or (B, L, C) pixels scaled to [-1, 1], ``mask`` (B, L)
    true at valid steps, ``y`` labels; for dual tasks ``x2``/``mask2``, padded to ``x``'s length."""
    length = None
    if split.second is not None:
        length = max(len(split.item(i)) for i in index)
        length = max(length, max(len(split.second.item(i)) for i in index))
    x, mask = _pad(split, index, multiple, length)
    batch = {"mask": torch.from_numpy(mask), "y": torch.from_numpy(split.labels[index].astype(np.int64))}
    batch["x"] = torch.from_numpy(x / 127.5 - 1.0 if split.channels else x)
    if split.channels:
        batch["x"] = batch["x"].float()
    if split.second is not None:
        x2, mask2 = _pad(split.second, index, multiple, x.shape[1])
        batch["x2"], batch["mask2"] = torch.from_numpy(x2), torch.from_numpy(mask2)
    return batch


# ---- shared by the readers ----

BYTE_VOCAB = 257  # byte b is token b + 1; 0 is padding


def need(path: Path, what: str) -> Path:
    """path, or a DataError saying what was expected there."""
    if not path.exists():
        raise DataError(path, f"not found (expected {what})")
    return path


def nonempty(split: Split, path: Path, what: str) -> Split:
    """Every split a reader returns holds at least one row."""
    if len(split) == 0:
        raise DataError(path, f"holds no {what}")
    return split


def byte_tokens(text: str, max_length: int) -> np.ndarray:
    """The first max_length UTF-8 bytes of text as tokens 1..256."""
    return np.frombuffer(text.encode("utf-8")[:max_length], dtype=np.uint8).astype(np.uint16) + 1


def holdout(train: Split, fraction: float, source: Path) -> dict[str, Split]:
    n_val = int(round(len(train) * fraction))
    if n_val < 1 or n_val >= len(train):
        raise DataError(source, f"holds {len(train)} rows, too few to hold out {fraction:.0%} for validation")
    index = np.arange(len(train))
    return {"train": train.subset(index[: len(train) - n_val]), "val": train.subset(index[len(train) - n_val :])}
