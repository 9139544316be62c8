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
from typing import Optional, Union

import numpy as np

from .data import Split, cached, need, nonempty, pack
from .errors import DataError, text_lines

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


# Trees drawn in a row without one in range before the generator gives up (about 15 s). One tree
# in 12 falls in LRA's 500 < length < 2000 and one in 5,000 in 1990 < length < 2000; a range
# this many draws miss is one that (nearly) no tree has.
MAX_MISSES = 200_000


def _generate_chunk(job: tuple[str, int, int, int, int, int]) -> list[tuple[str, int]]:
    seed, count, min_length, max_length, max_depth, max_args = job
    rng = random.Random(seed)  # a string seed: the same stream on every platform and run
    out, misses = [], 0
    while len(out) < count:
        tree, length = random_tree(rng, 1, max_depth, max_args)
        if min_length < length < max_length:
            out.append((to_text(tree), evaluate(tree)))
            misses = 0
        else:
            misses += 1
            if misses == MAX_MISSES:
                raise ValueError(
                    f"ListOps: none of {MAX_MISSES} random trees has {min_length} < length < {max_length} "
                    "(widen the length range)"
                )
    return out


def check_lengths(min_length: int, max_length: int, max_depth: int = 10, max_args: int = 10) -> None:
    """Raises ValueError unless some tree has min_length < length < max_length."""
    if max_depth < 1 or max_args < 2:
        raise ValueError(f"ListOps: max_depth must be >= 1 and max_args >= 2, got {max_depth} and {max_args}")
    # Lengths that exist: 1 (a digit), and from 4 on (an operator, two children, a bracket) when
    # an operator is allowed at all.
    lengths_exist = (min_length < 1 < max_length) or (max_depth > 1 and max(min_length + 1, 4) < max_length)
    if not lengths_exist:
        raise ValueError(
            f"ListOps: no expression has min_length < length < max_length for min_length={min_length}, "
            f"max_length={max_length} (lengths are 1, or 4 and more)"
        )


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
    whatever the number of workers (the work is cut into seeded chunks, merged in order). Raises
    ValueError when the length range holds too few distinct expressions to make ``n``."""
    if n < 0:
        raise ValueError(f"ListOps: the number of expressions must be >= 0, got {n}")
    check_lengths(min_length, max_length, max_depth, max_args)
    chunk = 256
    out, seen = [], set(exclude)
    round_ = 0
    while len(out) < n:
        before = len(out)
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
        if len(out) == before:
            raise ValueError(
                f"ListOps: {min_length} < length < {max_length} holds too few distinct expressions: {len(out)} "
                f"found, {n} wanted (widen the length range)"
            )
        round_ += 1
    return out


def write_splits(
    out_dir: Union[str, Path], sizes: Sequence[int] = (96000, 2000, 2000), seed: int = 0, workers: int = 1, **kw
) -> list[Path]:
    """Writes ``basic_{train,val,test}.tsv`` (LRA's names and format), distinct across splits."""
    if len(sizes) != 3 or any(int(n) < 1 for n in sizes):
        raise ValueError(f"ListOps: every split needs at least one expression, got sizes {tuple(sizes)}")
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


def check_structure(text: str) -> Optional[str]:
    """What is wrong with a printed expression (unbalanced parentheses, an operator not closed by
    ']' or with no arguments, a token of another vocabulary, not exactly one expression), or None."""
    depth, open_args, top = 0, [], 0  # parentheses open; argument counts of the open operators
    for token in text.replace("(", " ( ").replace(")", " ) ").split():
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
            if depth < 0:
                return "a ')' closes no '('"
        elif token in OPERATORS:
            open_args.append(0)
            continue
        elif token == CLOSE:
            if not open_args:
                return "a ']' closes no operator"
            if open_args.pop() == 0:
                return "an operator with no arguments"
        elif token not in DIGITS:
            return f"unknown token {token!r} (expected digits, {', '.join(OPERATORS)}, ], parentheses)"
        if token in DIGITS or token == CLOSE:  # a value: an argument of the open operator, or the result
            if open_args:
                open_args[-1] += 1
            else:
                top += 1
    if depth:
        return f"{depth} '(' not closed"
    if open_args:
        return f"{len(open_args)} operator(s) not closed by ']'"
    if top != 1:
        return f"{top} expressions side by side, expected one"
    return None


def read_tsv(path: Union[str, Path]) -> Iterator[tuple[np.ndarray, int]]:
    """(token ids, label) per row of a ``basic_*.tsv`` file; raises DataError on any bad line:
    a wrong header, a field count, a label, a token, or an expression that is not well formed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found (expected LRA's listops-1000/basic_{train,val,test}.tsv)")
    for lineno, line in text_lines(path):
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
        if not source.strip():
            raise DataError(path, "empty expression", lineno)
        problem = check_structure(source)
        if problem:
            raise DataError(path, f"not a well-formed expression: {problem}", lineno)
        yield np.asarray([TOKEN_ID[t] for t in tokenize(source)], dtype=np.uint8), int(target)


def read_splits(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    """DIR/basic_{train,val,test}.tsv (LRA's listops-1000)."""
    out = {}
    for split in SPLITS:
        path = need(data_dir / f"basic_{split}.tsv", "LRA's listops-1000/basic_{train,val,test}.tsv")
        build = lambda p=path: nonempty(pack(read_tsv(p)), p, "expressions after its header")  # noqa: E731
        out[split] = cached("listops", [path], {}, build, cache_dir)
    return out
