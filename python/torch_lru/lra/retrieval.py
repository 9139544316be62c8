"""LRA Retrieval: pairs of AAN documents at the byte level, DIR/new_aan_pairs.{train,eval,test}.tsv
(LRA's tsv_data): label, id1, id2, text1, text2. A Split holds the first documents, its
``second`` the other ones.
"""

import csv
import sys
from pathlib import Path

import numpy as np

from .data import Split, byte_tokens, cached, need, pack
from .errors import DataError


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
            first.append((byte_tokens(fields[3], max_length), label))
            second.append((byte_tokens(fields[4], max_length), label))
    if not first:
        raise DataError(path, "no rows")
    split = pack(first, dtype=np.uint16)
    split.second = pack(second, dtype=np.uint16)
    return split


def read_splits(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    max_length = int(opts.get("max_length", 4000))
    out = {}
    for split, name in (("train", "train"), ("val", "eval"), ("test", "test")):
        path = need(data_dir / f"new_aan_pairs.{name}.tsv", "LRA's tsv_data/new_aan_pairs.{train,eval,test}.tsv")
        build = lambda p=path: _aan_rows(p, max_length)  # noqa: E731
        out[split] = cached("retrieval", [path], {"max_length": max_length}, build, cache_dir)
    return out
