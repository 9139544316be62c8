"""Pathfinder and Path-X (Linsley et al. 2018, as LRA uses them): a generator writing the official
image + metadata layout, and its reader.

Each image holds two target contours and some shorter distractors, all dashed: chains of short
anti-aliased line segments ("paddles") separated by gaps, each paddle's direction drawn close to
the previous one's (the continuity setting bounds the turn) and redrawn if it would touch an
occupied pixel or leave the margin. Two round markers sit at the two ends of one target contour
(label 1, "connected") or at one end of each (label 0). Everything is composited by pixel-wise
maximum into an 8-bit grey image.

Layout: OUT/imgs/<batch>/sample_<i>.png and OUT/metadata/<batch>.npy, the latter (despite its
extension, as in the release) a text file with one line per image:
``imgs/<batch> sample_<i>.png <i> <label> <contour_length>``.
"""

import math
import multiprocessing
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from .data import Split, cached, need, pack
from .errors import DataError, text_lines

BATCH = 1000  # images per folder, as in the release


@dataclass(frozen=True)
class Level:
    size: int  # image side, pixels
    paddle_length: float  # length of one segment
    gap: float  # space between segments along a contour
    thickness: float  # line half-width, pixels
    margin: int  # contours keep this far from the border
    marker_radius: float
    seed_distance: float  # the two target contours start at least this far apart
    continuity: float  # larger: smoother contours (the largest turn per paddle is pi / (2 continuity))
    distractors: int
    contour_length: int = 14  # paddles per target contour


LEVELS = {
    "pathfinder": Level(32, 2.0, 1.5, 0.5, 1, 1.5, 7.0, 1.0, 20),
    "pathx": Level(128, 5.0, 3.0, 1.5, 3, 3.0, 20.0, 1.8, 35),
}


_COORDS = np.arange(1024, dtype=np.float64)  # pixel coordinates, sliced per segment
_EMPTY = np.zeros((0, 0))


def _segment(canvas_size: int, a, b, half_width: float, box_pad: float):
    """Anti-aliased coverage (0..1) of the segment a-b within its bounding box: (y0, x0, patch).
    a and b are (y, x) pairs of floats; plain float arithmetic for the box keeps this fast."""
    (ay, ax), (by, bx) = a, b
    y0, y1 = max(int(math.floor(min(ay, by) - box_pad)), 0), min(int(math.ceil(max(ay, by) + box_pad)) + 1, canvas_size)
    x0, x1 = max(int(math.floor(min(ax, bx) - box_pad)), 0), min(int(math.ceil(max(ax, bx) + box_pad)) + 1, canvas_size)
    if y1 <= y0 or x1 <= x0:
        return y0, x0, _EMPTY
    ys, xs = _COORDS[y0:y1, None], _COORDS[None, x0:x1]
    dy, dx = by - ay, bx - ax
    length_sq = dy * dy + dx * dx
    if length_sq < 1e-12:
        py, px = ys - ay, xs - ax
    else:
        t = ((ys - ay) * dy + (xs - ax) * dx) / length_sq
        np.clip(t, 0.0, 1.0, out=t)
        py, px = ys - (ay + t * dy), xs - (ax + t * dx)
    coverage = half_width + 0.5 - np.sqrt(py * py + px * px)
    np.clip(coverage, 0.0, 1.0, out=coverage)
    return y0, x0, coverage


def _disk(canvas_size: int, c, radius: float):
    return _segment(canvas_size, c, c, radius, radius + 1)


class _Canvas:
    def __init__(self, size: int):
        self.size = size
        self.image = np.zeros((size, size))
        self.occupied = np.zeros((size, size), dtype=bool)

    def fits(self, y0, x0, patch, clearance: np.ndarray) -> bool:
        h, w = patch.shape
        return not np.any((patch > 0) & clearance[y0 : y0 + h, x0 : x0 + w])

    def draw(self, y0, x0, patch):
        h, w = patch.shape
        region = self.image[y0 : y0 + h, x0 : x0 + w]
        np.maximum(region, patch, out=region)
        self.occupied[y0 : y0 + h, x0 : x0 + w] |= patch > 0


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:
                out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def _contour(rng: random.Random, canvas: _Canvas, level: Level, n: int, start=None, tries: int = 20):
    """Draws a dashed contour of n paddles; returns its two end points, or None if it did not fit."""
    s, m = level.size, level.margin + level.thickness + 1
    clearance = _dilate(canvas.occupied, max(1, int(round(level.thickness + 1))))
    max_turn = math.pi / (2 * level.continuity)
    for _ in range(tries):
        p = tuple(start) if start is not None else (rng.uniform(m, s - m), rng.uniform(m, s - m))
        angle = rng.uniform(0, 2 * math.pi)
        patches, first, ok = [], p, True
        for _ in range(n):
            for _ in range(tries):
                turn = rng.uniform(-max_turn, max_turn)
                dy, dx = math.sin(angle + turn), math.cos(angle + turn)
                q = (p[0] + level.paddle_length * dy, p[1] + level.paddle_length * dx)
                if not (m <= q[0] <= s - m and m <= q[1] <= s - m):
                    continue
                y0, x0, patch = _segment(s, p, q, level.thickness, level.thickness + 1)
                if patch.size and canvas.fits(y0, x0, patch, clearance):
                    break
            else:
                ok = False
                break
            patches.append((y0, x0, patch))
            angle += turn
            p = (q[0] + level.gap * dy, q[1] + level.gap * dx)
        if ok:
            for patch in patches:
                canvas.draw(*patch)
            return first, q
    return None


def render(rng: random.Random, level: Level, label: int, attempts: int = 50) -> np.ndarray:
    """One image (size, size) uint8 whose markers are connected iff label == 1."""
    s = level.size
    for _ in range(attempts):
        canvas = _Canvas(s)
        first = _contour(rng, canvas, level, level.contour_length)
        if first is None:
            continue
        second = None
        for _ in range(10):
            second_start = [rng.uniform(level.margin + 2, s - level.margin - 2) for _ in range(2)]
            if math.dist(second_start, first[0]) >= level.seed_distance:
                second = _contour(rng, canvas, level, level.contour_length, start=second_start)
                if second is not None:
                    break
        if second is None:
            continue
        for _ in range(level.distractors):
            _contour(rng, canvas, level, max(1, level.contour_length // 3), tries=5)
        a = first[rng.randrange(2)]
        b = (first[1] if a is first[0] else first[0]) if label == 1 else second[rng.randrange(2)]
        for c in (a, b):
            canvas.draw(*_disk(s, c, level.marker_radius))
        return np.round(canvas.image * 255).astype(np.uint8)
    raise RuntimeError(f"could not place the contours on a {s} px canvas in {attempts} attempts; relax the level")


def _write_batch(job: tuple[Path, int, int, int, Level, str]) -> None:
    from PIL import Image  # pillow, a dependency of matplotlib

    out, batch, start, count, level, seed = job
    rng = random.Random(f"{seed}-{batch}")  # a string seed: the same images on every platform
    folder = out / "imgs" / str(batch)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(start, start + count):
        label = rng.randrange(2)
        Image.fromarray(render(rng, level, label)).save(folder / f"sample_{i}.png")
        lines.append(f"imgs/{batch} sample_{i}.png {i} {label} {level.contour_length}\n")
    (out / "metadata").mkdir(exist_ok=True)
    partial = out / "metadata" / f"{batch}.npy.partial"
    partial.write_text("".join(lines))
    partial.replace(out / "metadata" / f"{batch}.npy")  # metadata last: a listed image exists


def write_dataset(
    out, n: int, level: Level, seed: int = 0, workers: int = 1, contour_length: Optional[int] = None
) -> list[Path]:
    """Writes n images in the official layout; the same images for the same seed, any worker count."""
    if n < 1:
        raise ValueError(f"Pathfinder: the number of images must be >= 1, got {n}")
    if contour_length is not None:
        level = replace(level, contour_length=contour_length)
    if level.contour_length < 1:
        raise ValueError(f"Pathfinder: contour_length must be >= 1 paddle, got {level.contour_length}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out, b, b * BATCH, min(BATCH, n - b * BATCH), level, str(seed)) for b in range((n + BATCH - 1) // BATCH)]
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pool.map(_write_batch, jobs, chunksize=1)
    else:
        for job in jobs:
            _write_batch(job)
    return sorted((out / "metadata").glob("*.npy"))


# ---- the reader ----


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
    meta_dir = need(root / "metadata", "the Pathfinder layout DIR/{imgs/<batch>/sample_<i>.png, metadata/<batch>.npy}")
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


def read_splits(data_dir: Path, opts: dict, cache_dir) -> dict[str, Split]:
    """Every image the metadata list, in a seeded 80/10/10 split."""
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
