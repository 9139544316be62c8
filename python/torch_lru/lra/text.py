"""LRA Text: IMDB reviews at the byte level, from the aclImdb layout
(DIR/{train,test}/{pos,neg}/<id>_<rating>.txt) or a user's export DIR/{train,test}.tsv with the
header "label<TAB>text". The test split is also the validation split (the S4/S5 convention: LRA
has no IMDB validation set).
"""

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .data import Split, byte_tokens, cached, need, nonempty, pack
from .errors import DataError


def _imdb_files(folder: Path) -> list[tuple[Path, int]]:
    """(review file, label) of an aclImdb split folder, negatives first."""
    out = []
    for label, name in ((0, "neg"), (1, "pos")):
        sub = need(folder / name, "aclImdb's {train,test}/{pos,neg}/ folders")
        files = sorted(sub.glob("*.txt"))
        if not files:
            raise DataError(sub, "no <id>_<rating>.txt reviews in this folder")
        out += [(f, label) for f in files]
    return out


def _imdb_rows(files: list[tuple[Path, int]], max_length: int) -> Iterator[tuple[np.ndarray, int]]:
    for f, label in files:
        yield byte_tokens(f.read_text(encoding="utf-8", errors="replace"), max_length), label


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
            yield byte_tokens(fields[1], max_length), int(fields[0])


def read_splits(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    max_length = int(opts.get("max_length", 4096))
    out = {}
    if (data_dir / "train.tsv").exists():
        for split in ("train", "test"):
            path = need(data_dir / f"{split}.tsv", "train.tsv and test.tsv (label<TAB>text)")
            build = lambda p=path: nonempty(pack(_tsv_rows(p, max_length), dtype=np.uint16), p, "reviews")  # noqa: E731
            out[split] = cached("text-tsv", [path], {"max_length": max_length}, build, cache_dir)
        out["val"] = out["test"]
        return out
    for split in ("train", "test"):
        folder = need(data_dir / split, "the aclImdb layout DIR/{train,test}/{pos,neg}/*.txt")
        files = _imdb_files(folder)
        build = lambda f=files: pack(_imdb_rows(f, max_length), dtype=np.uint16)  # noqa: E731
        out[split] = cached("text", [f for f, _ in files], {"max_length": max_length}, build, cache_dir)
    out["val"] = out["test"]
    return out
