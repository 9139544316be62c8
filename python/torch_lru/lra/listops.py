"""ListOps (Nangia & Bowman 2018, as LRA generates it): a generator writing LRA's TSV layout, and
the reader with LRA's tokenisation.

An expression is a tree: a node at depth < max_depth is a digit with probability 0.75, otherwise an
operator (MIN, MAX, MED: the median rounded down, SM: sum mod 10) over 2..max_args children; at
max_depth it is always a digit. Its length is its number of tokens once the parentheses are
dropped (operator, children, closing bracket). Trees with min_length < length < max_length are
kept, de-duplicated, and written as LRA prints them: each argument appended inside a new pair of
parentheses, e.g. ``( ( ( [MAX 2 ) 9 ) ] )``.
"""

import csv
import multiprocessing
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Union

import numpy as np

from .errors import DataError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
DIGITS = tuple(str(d) for d in range(10))
CLOSE = "]"
# Token ids: 0 is padding; ']' becomes 'X' as in LRA's tokeniser.
VOCAB = ("<pad>",) + DIGITS + OPERATORS + ("X",)
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
N_CLASSES = 10
HEADER = ("Source", "Target")
SPLITS = ("train", "val", "test")


def apply(op: str, args: Sequence[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        ordered = sorted(args)
        n = len(ordered)
        return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) // 2
    if op == "[SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def random_tree(rng: random.Random, depth: int = 1, max_depth: int = 10, max_args: int = 10):
    """Returns (tree, length); a tree is an int or (operator, [children])."""
    if depth >= max_depth or rng.random() < 0.75:
        return rng.randrange(10), 1
    children, length = [], 2  # the operator and the closing bracket
    for _ in range(rng.randint(2, max_args)):
        child, n = random_tree(rng, depth + 1, max_depth, max_args)
        children.append(child)
        length += n
    return (rng.choice(OPERATORS), children), length


def evaluate(tree) -> int:
    if isinstance(tree, int):
        return tree
    op, children = tree
    return apply(op, [evaluate(c) for c in children])


def to_text(tree) -> str:
    if isinstance(tree, int):
        return str(tree)
    op, children = tree
    text = op
    for child in children:
        text = f"( {text} {to_text(child)} )"
    return f"( {text} {CLOSE} )"


def _generate_chunk(job: tuple[str, int, int, int, int, int]) -> list[tuple[str, int]]:
    seed, count, min_length, max_length, max_depth, max_args = job
    rng = random.Random(seed)  # a string seed: the same stream on every platform and run
    out = []
    while len(out) < count:
        tree, length = random_tree(rng, 1, max_depth, max_args)
        if min_length < length < max_length:
            out.append((to_text(tree), evaluate(tree)))
    return out


def generate(
    n: int,
    seed: int = 0,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    workers: int = 1,
    exclude: frozenset = frozenset(),
) -> list[tuple[str, int]]:
    """``n`` distinct (expression, label) pairs, none in ``exclude``; the same for the same seed
    whatever the number of workers (the work is cut into seeded chunks, merged in order)."""
    chunk = 256
    out, seen = [], set(exclude)
    round_ = 0
    while len(out) < n:
        need = n - len(out)
        jobs = [
            (f"listops-{seed}-{round_}-{i}", chunk, min_length, max_length, max_depth, max_args)
            for i in range((need + chunk - 1) // chunk + 1)
        ]
        if workers > 1:
            # fork: the workers only run pure Python, and start without re-importing torch
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                chunks = pool.map(_generate_chunk, jobs)
        else:
            chunks = map(_generate_chunk, jobs)
        for pairs in chunks:
            for text, label in pairs:
                if text not in seen and len(out) < n:
                    seen.add(text)
                    out.append((text, label))
        round_ += 1
    return out


def write_splits(
    out_dir: Union[str, Path], sizes: Sequence[int] = (96000, 2000, 2000), seed: int = 0, workers: int = 1, **kw
) -> list[Path]:
    """Writes ``basic_{train,val,test}.tsv`` (LRA's names and format), distinct across splits."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = generate(sum(sizes), seed=seed, workers=workers, **kw)
    paths, start = [], 0
    for split, size in zip(SPLITS, sizes):
        path = out_dir / f"basic_{split}.tsv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(rows[start : start + size])
        start += size
        paths.append(path)
    return paths


def tokenize(text: str) -> list[str]:
    """LRA's tokenisation: ']' -> 'X', parentheses dropped, split on white space."""
    return text.replace("]", "X").replace("(", "").replace(")", "").split()


def read_tsv(path: Union[str, Path]) -> Iterator[tuple[np.ndarray, int]]:
    """(token ids, label) per row of a ``basic_*.tsv`` file; raises DataError on any bad line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found (expected LRA's listops-1000/basic_{train,val,test}.tsv)")
    with open(path, newline="") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.rstrip("\n").rstrip("\r").split("\t")
            if lineno == 1:
                if tuple(fields) != HEADER:
                    raise DataError(path, f"expected the header 'Source<TAB>Target', got {line.strip()!r}", lineno)
                continue
            if fields == [""]:
                continue
            if len(fields) != 2:
                raise DataError(path, f"expected 2 tab-separated fields (Source, Target), got {len(fields)}", lineno)
            source, target = fields
            if target not in DIGITS:
                raise DataError(path, f"expected a label 0-9 in the Target column, got {target!r}", lineno)
            ids = []
            for token in tokenize(source):
                if token not in TOKEN_ID:
                    raise DataError(
                        path, f"unknown token {token!r} (expected digits, {', '.join(OPERATORS)}, ])", lineno
                    )
                ids.append(TOKEN_ID[token])
            if not ids:
                raise DataError(path, "empty expression", lineno)
            yield np.asarray(ids, dtype=np.uint8), int(target)
