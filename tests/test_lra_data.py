"""LRA data: the generators' statistics, every reader on small files in the official layouts, the
caches, batching, and bad files."""

import gzip
import pickle
import random
from collections import Counter

import numpy as np
import pytest

from torch_lru.lra import data, listops, pathfinder, tasks
from torch_lru.lra.errors import DataError


def evaluate_text(text: str) -> int:
    """An evaluator of printed ListOps written apart from the generator: a stack machine over tokens."""
    stack = []
    for token in text.replace("(", " ").replace(")", " ").split():
        if token == "]":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            if op == "[MIN":
                stack.append(min(args))
            elif op == "[MAX":
                stack.append(max(args))
            elif op == "[SM":
                stack.append(sum(args) % 10)
            else:
                stack.append(int(np.floor(np.median(args))))
        elif token.startswith("["):
            stack.append(token)
        else:
            stack.append(int(token))
    assert len(stack) == 1
    return stack[0]


# ---- ListOps ----


def test_listops_generator_statistics():
    rows = listops.generate(300, seed=3, min_length=20, max_length=300)
    lengths = [len(listops.tokenize(text)) for text, _ in rows]
    assert all(20 < n < 300 for n in lengths)
    assert len({text for text, _ in rows}) == len(rows)
    for text, label in rows:
        assert label == evaluate_text(text), text
    counts = Counter(label for _, label in rows)
    assert set(counts) == set(range(10))  # every class occurs; none is all of it
    assert max(counts.values()) < 0.4 * len(rows)


def test_listops_default_lengths_and_the_printed_form():
    rows = listops.generate(5, seed=0)
    assert all(500 < len(listops.tokenize(text)) < 2000 for text, _ in rows)
    tree = ("[MAX", [2, 9])
    assert listops.to_text(tree) == "( ( ( [MAX 2 ) 9 ) ] )"
    assert listops.tokenize(listops.to_text(tree)) == ["[MAX", "2", "9", "X"]


def test_listops_is_reproducible_and_independent_of_workers():
    a = listops.generate(40, seed=5, min_length=10, max_length=100)
    b = listops.generate(40, seed=5, min_length=10, max_length=100, workers=2)
    c = listops.generate(40, seed=6, min_length=10, max_length=100)
    assert a == b and a != c


def test_listops_files_round_trip_through_the_reader(tmp_path):
    paths = listops.write_splits(tmp_path, (30, 5, 5), seed=1, min_length=10, max_length=80)
    assert [p.name for p in paths] == ["basic_train.tsv", "basic_val.tsv", "basic_test.tsv"]
    assert paths[0].read_text().splitlines()[0] == "Source\tTarget"
    texts = [line.split("\t")[0] for p in paths for line in p.read_text().splitlines()[1:]]
    assert len(set(texts)) == 40  # distinct across splits
    splits = tasks.load_splits("listops", tmp_path, cache_dir=tmp_path / "cache")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [30, 5, 5]
    first = paths[0].read_text().splitlines()[1].split("\t")
    ids = splits["train"].item(0)
    assert [listops.VOCAB[i] for i in ids] == [t if t != "]" else "X" for t in listops.tokenize(first[0])]
    assert splits["train"].labels[0] == int(first[1])


def test_row_limits_keep_the_same_fixed_subset_in_every_run(tmp_path):
    listops.write_splits(tmp_path, (30, 8, 8), seed=1, min_length=10, max_length=80)
    full = tasks.load_splits("listops", tmp_path, cache_dir=tmp_path / "cache")
    opts = {"train_rows": 12, "test_rows": 5, "val_rows": 100}
    a = tasks.load_splits("listops", tmp_path, opts, cache_dir=tmp_path / "cache")
    b = tasks.load_splits("listops", tmp_path, dict(opts), cache_dir=tmp_path / "cache")
    assert [len(a[s]) for s in ("train", "val", "test")] == [12, 8, 5]  # a limit above the size keeps all
    for name in ("train", "test"):
        rows = [a[name].item(i).tolist() for i in range(len(a[name]))]
        assert rows == [b[name].item(i).tolist() for i in range(len(b[name]))]
        every = [full[name].item(i).tolist() for i in range(len(full[name]))]
        assert all(r in every for r in rows) and len({tuple(r) for r in rows}) == len(rows)
    with pytest.raises(ValueError, match="data.val_rows must be >= 1"):
        tasks.load_splits("listops", tmp_path, {"val_rows": 0}, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    "content, problem, line",
    [
        ("Src\tTarget\n", "expected the header", 1),
        ("Source\tTarget\n( [MAX 1 2 ] )\t3\textra\n", "expected 2 tab-separated fields", 2),
        ("Source\tTarget\n( [MAX 1 2 ] )\t3\n( [MAX 1 2 ] )\tten\n", "expected a label 0-9", 3),
        ("Source\tTarget\n( [MAX 1 [POW 2 ] )\t3\n", r"unknown token '\[POW'", 2),
    ],
)
def test_listops_reader_names_the_file_and_line_of_bad_data(tmp_path, content, problem, line):
    path = tmp_path / "basic_train.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=problem) as info:
        list(listops.read_tsv(path))
    assert info.value.path == str(path) and info.value.line == line
    assert f"{path}:{line}:" in str(info.value)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DataError, match="basic_train.tsv: not found"):
        tasks.load_splits("listops", tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="unknown task 'lisptops'; the tasks are listops"):
        tasks.load_splits("lisptops", tmp_path)


# ---- Pathfinder ----


@pytest.mark.parametrize("name", ["pathfinder", "pathx"])
def test_pathfinder_images(name):
    level = pathfinder.LEVELS[name]
    image = pathfinder.render(random.Random(0), level, 1)
    assert image.shape == (level.size, level.size) and image.dtype == np.uint8
    assert image.max() == 255 and 0.02 < (image > 0).mean() < 0.6


def test_pathfinder_layout_labels_and_seeds(tmp_path):
    metas = pathfinder.write_dataset(tmp_path / "a", 60, pathfinder.LEVELS["pathfinder"], seed=1, workers=2)
    assert [m.name for m in metas] == ["0.npy"]
    lines = metas[0].read_text().splitlines()
    assert len(lines) == 60
    fields = lines[0].split()
    assert fields[:2] == ["imgs/0", "sample_0.png"] and (tmp_path / "a" / "imgs" / "0" / "sample_0.png").exists()
    labels = [int(line.split()[3]) for line in lines]
    assert 15 <= sum(labels) <= 45  # balanced up to chance
    pathfinder.write_dataset(tmp_path / "b", 60, pathfinder.LEVELS["pathfinder"], seed=1)
    assert (tmp_path / "b" / "metadata" / "0.npy").read_text() == metas[0].read_text()
    a = (tmp_path / "a" / "imgs" / "0" / "sample_7.png").read_bytes()
    assert a == (tmp_path / "b" / "imgs" / "0" / "sample_7.png").read_bytes()

    # The reader: every image, the 80/10/10 split, the empty file skipped, a missing file named.
    (tmp_path / "a" / "imgs" / "0" / "sample_3.png").write_bytes(b"")
    splits = tasks.load_splits("pathfinder", tmp_path / "a", cache_dir=tmp_path / "cache")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [49, 5, 5]
    assert splits["train"].item(0).shape == (1024, 1)
    (tmp_path / "a" / "imgs" / "0" / "sample_9.png").unlink()
    with pytest.raises(DataError, match="sample_9.png, which does not exist"):
        list(pathfinder.read_pathfinder(tmp_path / "a"))


# ---- Text, Retrieval, Image, Fashion-MNIST ----


def test_imdb_reader(tmp_path):
    for split in ("train", "test"):
        for label, name in ((0, "neg"), (1, "pos")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(2 + label):
                (folder / f"{i}_{7 if label else 2}.txt").write_text(f"review {i} é" * (i + 1))
    splits = tasks.load_splits("text", tmp_path, {"max_length": 12}, cache_dir=tmp_path / "cache")
    assert len(splits["train"]) == 5 and splits["val"] is splits["test"]
    assert sorted(splits["train"].labels.tolist()) == [0, 0, 1, 1, 1]
    assert bytes((splits["train"].item(0) - 1).astype(np.uint8))[:8] == b"review 0"
    assert max(splits["train"].lengths()) == 12
    (tmp_path / "train" / "pos" / "0_7.txt").unlink()
    (tmp_path / "train" / "pos" / "1_7.txt").unlink()
    (tmp_path / "train" / "pos" / "2_7.txt").unlink()
    with pytest.raises(DataError, match="no <id>_<rating>.txt reviews"):
        tasks.load_splits("text", tmp_path, cache_dir=tmp_path / "cache")


def test_imdb_tsv_export(tmp_path):
    for split in ("train", "test"):
        (tmp_path / f"{split}.tsv").write_text("label\ttext\n1\tgreat film\n0\tdull\n")
    splits = tasks.load_splits("text", tmp_path, cache_dir=tmp_path / "cache")
    assert splits["train"].labels.tolist() == [1, 0] and splits["val"] is splits["test"]
    assert bytes((splits["train"].item(1) - 1).astype(np.uint8)) == b"dull"
    (tmp_path / "test.tsv").write_text("label\ttext\n2\tthree classes?\n")
    with pytest.raises(DataError, match=r"test.tsv:2: expected 'label<TAB>text' with label 0 or 1"):
        tasks.load_splits("text", tmp_path, cache_dir=tmp_path / "cache")


def test_aan_reader(tmp_path):
    for name in ("train", "eval", "test"):
        rows = [f"{i % 2}\tid{i}\tid{i + 1}\tfirst text {i}\tsecond {i}" for i in range(4)]
        (tmp_path / f"new_aan_pairs.{name}.tsv").write_text("\n".join(rows) + "\n")
    splits = tasks.load_splits("retrieval", tmp_path, cache_dir=tmp_path / "cache")
    train = splits["train"]
    assert len(train) == 4 and train.second is not None and train.labels.tolist() == [0, 1, 0, 1]
    assert bytes((train.second.item(1) - 1).astype(np.uint8)) == b"second 1"
    batch = data.collate(train, np.arange(4))
    assert batch["x"].shape == batch["x2"].shape and batch["mask2"].sum() == sum(len(f"second {i}") for i in range(4))
    (tmp_path / "new_aan_pairs.eval.tsv").write_text("1\tid\tonly three\n")
    with pytest.raises(DataError, match=r"new_aan_pairs.eval.tsv:1: expected 5 tab-separated fields"):
        tasks.load_splits("retrieval", tmp_path, cache_dir=tmp_path / "cache")


def test_cifar_reader(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": list(range(4))}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)
    grey = tasks.load_splits("image", tmp_path, {"grayscale": True}, cache_dir=tmp_path / "cache")
    assert [len(grey[s]) for s in ("train", "val", "test")] == [18, 2, 4]
    assert grey["train"].item(0).shape == (1024, 1)
    colour = tasks.load_splits("image", tmp_path, {"grayscale": False}, cache_dir=tmp_path / "cache")
    rgb = colour["test"].item(1)
    assert rgb.shape == (1024, 3)
    with open(tmp_path / "test_batch", "rb") as f:
        raw = pickle.load(f)[b"data"][1]
    np.testing.assert_array_equal(rgb[:, 0], raw[:1024])  # red plane first, pixels in row-major order
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        tasks.load_splits("image", tmp_path, cache_dir=tmp_path / "cache2")


def write_idx(path, array):
    header = (0x800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reader(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 6)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    splits = tasks.load_splits("fmnist", tmp_path, cache_dir=tmp_path / "cache")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [18, 2, 6]
    assert splits["test"].item(0).shape == (784, 1)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((2, 2)))
    with pytest.raises(DataError, match="not an IDX file of 1 dimensions"):
        tasks.load_splits("fmnist", tmp_path, cache_dir=tmp_path / "cache")


# ---- caches and batches ----


def test_cache_is_reused_until_the_source_changes(tmp_path, monkeypatch):
    listops.write_splits(tmp_path, (10, 2, 2), seed=0, min_length=5, max_length=40)
    first = tasks.load_splits("listops", tmp_path, cache_dir=tmp_path / "cache")
    assert isinstance(first["train"].values, np.memmap)

    def refuse(path):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(listops, "read_tsv", refuse)
    again = tasks.load_splits("listops", tmp_path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again["train"].values, first["train"].values)
    monkeypatch.undo()
    with open(tmp_path / "basic_val.tsv", "a") as f:
        f.write("( [SM 1 2 ] )\t3\n")
    assert len(tasks.load_splits("listops", tmp_path, cache_dir=tmp_path / "cache")["val"]) == 3


def test_batches_are_deterministic_and_cover_each_row_once():
    lengths = np.random.default_rng(0).integers(1, 100, 1000)
    a = data.batches(lengths, 32, seed=1, epoch=2)
    assert [b.tolist() for b in a] == [b.tolist() for b in data.batches(lengths, 32, seed=1, epoch=2)]
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    assert [b.tolist() for b in a] != [b.tolist() for b in data.batches(lengths, 32, seed=1, epoch=3)]
    # Bucketing keeps padding small: rows in a batch have similar lengths.
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in a])
    assert spread < 20


def test_collate_pads_and_masks():
    split = data.pack([(np.array([3, 4, 5]), 1), (np.array([7]), 0)])
    batch = data.collate(split, np.array([0, 1]), multiple=4)
    assert batch["x"].tolist() == [[3, 4, 5, 0], [7, 0, 0, 0]]
    assert batch["mask"].tolist() == [[True, True, True, False], [True, False, False, False]]
    assert batch["y"].tolist() == [1, 0]
    pixels = data.pack([(np.full((3, 1), 255), 0)], channels=1)
    assert data.collate(pixels, np.array([0]), multiple=1)["x"].tolist() == [[[1.0], [1.0], [1.0]]]


# ---- hostile and careless files ----


def write_listops(folder, train="( [MAX 1 2 ] )\t2\n", val="( [MIN 3 4 ] )\t3\n", test="( [SM 5 6 ] )\t1\n"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("train", train), ("val", val), ("test", test)):
        (folder / f"basic_{name}.tsv").write_text("Source\tTarget\n" + body)


@pytest.mark.parametrize(
    "expression, problem",
    [
        ("( ( [MAX 1 2 ] )", r"1 '\(' not closed"),
        ("( [MAX 1 2 ] ) )", r"a '\)' closes no '\('"),
        ("( [MAX 1 2 )", r"1 operator\(s\) not closed by '\]'"),
        ("( [MAX 1 2 ] ] )", r"a '\]' closes no operator"),
        ("( [MIN ] )", "an operator with no arguments"),
        ("1 2", "2 expressions side by side"),
    ],
)
def test_listops_reader_refuses_malformed_expressions(tmp_path, expression, problem):
    path = tmp_path / "basic_train.tsv"
    path.write_text(f"Source\tTarget\n( [SM 1 2 ] )\t3\n{expression}\t4\n")
    with pytest.raises(DataError, match=f"not a well-formed expression: {problem}") as info:
        list(listops.read_tsv(path))
    assert info.value.line == 3


def test_listops_reader_accepts_every_generated_expression():
    for text, _ in listops.generate(200, seed=4, min_length=1, max_length=300):
        assert listops.check_structure(text) is None, text


def test_random_bytes_in_a_tsv_name_the_file_and_line(tmp_path):
    path = tmp_path / "basic_train.tsv"
    path.write_bytes(b"Source\tTarget\n( [SM 1 2 ] )\t3\n\xff\xfe\x00garbage\t1\n")
    with pytest.raises(DataError, match=r"basic_train.tsv:3: not UTF-8 text"):
        list(listops.read_tsv(path))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_header_only_listops_split_is_an_error(tmp_path, split):
    write_listops(tmp_path, **{split: ""})
    with pytest.raises(DataError, match=rf"basic_{split}.tsv: holds no expressions after its header"):
        tasks.load_splits("listops", tmp_path, cache_dir=tmp_path / "cache")


def test_other_empty_splits_are_errors(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "tsv" / f"{split}.tsv").parent.mkdir(exist_ok=True)
        (tmp_path / "tsv" / f"{split}.tsv").write_text("label\ttext\n" + ("1\tfine\n" if split == "train" else ""))
    with pytest.raises(DataError, match=r"test.tsv: holds no reviews"):
        tasks.load_splits("text", tmp_path / "tsv", cache_dir=tmp_path / "cache")
    rng = np.random.default_rng(0)
    (tmp_path / "fm").mkdir()
    for n, name in ((0, "t10k"), (30, "train")):
        write_idx(tmp_path / "fm" / f"{name}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / "fm" / f"{name}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: holds no images"):
        tasks.load_splits("fmnist", tmp_path / "fm", cache_dir=tmp_path / "cache")
    for n, name in ((3, "t10k"), (3, "train")):
        write_idx(tmp_path / "fm" / f"{name}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / "fm" / f"{name}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    with pytest.raises(DataError, match=r"holds 3 rows, too few to hold out 10% for validation"):
        tasks.load_splits("fmnist", tmp_path / "fm", cache_dir=tmp_path / "cache")
    (tmp_path / "fm" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b truncated gzip")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: cannot be read"):
        tasks.load_splits("fmnist", tmp_path / "fm", cache_dir=tmp_path / "cache")


@pytest.fixture
def small_pathfinder(tmp_path):
    root = tmp_path / "pf"
    pathfinder.write_dataset(root, 12, pathfinder.LEVELS["pathfinder"], seed=0)
    return root


def rewrite_line(meta, index, folder, name):
    lines = meta.read_text().splitlines()
    fields = lines[index].split()
    fields[0], fields[1] = folder, name
    lines[index] = " ".join(fields)
    meta.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "folder, name",
    [("imgs/0/../../..", "outside.png"), ("/etc", "passwd"), ("imgs/0", "../../../outside.png")],
)
def test_pathfinder_metadata_cannot_lead_out_of_the_data_folder(tmp_path, small_pathfinder, folder, name):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(tmp_path / "outside.png")
    meta = small_pathfinder / "metadata" / "0.npy"
    rewrite_line(meta, 4, folder, name)
    with pytest.raises(DataError, match=r"0.npy:5: names .*, which lies outside the data folder"):
        tasks.load_splits("pathfinder", small_pathfinder, cache_dir=tmp_path / "cache")


def test_pathfinder_links_out_of_the_data_folder_are_refused(tmp_path, small_pathfinder):
    target = small_pathfinder / "imgs" / "0" / "sample_2.png"
    (tmp_path / "elsewhere.png").write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(DataError, match=r"0.npy:3: names imgs/0/sample_2.png, which lies outside"):
        tasks.load_splits("pathfinder", small_pathfinder, cache_dir=tmp_path / "cache")


def test_pathfinder_bad_images_name_the_image_and_the_metadata_line(tmp_path, small_pathfinder):
    from PIL import Image

    image = small_pathfinder / "imgs" / "0" / "sample_5.png"
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match=r"0.npy:6: cannot read the image .*sample_5.png"):
        tasks.load_splits("pathfinder", small_pathfinder, cache_dir=tmp_path / "cache")
    image.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"0.npy:6: cannot read the image .*sample_5.png"):
        tasks.load_splits("pathfinder", small_pathfinder, cache_dir=tmp_path / "cache")
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image)
    with pytest.raises(DataError, match=r"0.npy:6: .*sample_5.png is 64x64 pixels, the images before it 32x32"):
        tasks.load_splits("pathfinder", small_pathfinder, cache_dir=tmp_path / "cache")


def test_pathfinder_needs_enough_images_for_its_split(tmp_path):
    root = tmp_path / "pf"
    pathfinder.write_dataset(root, 6, pathfinder.LEVELS["pathfinder"], seed=0)
    with pytest.raises(DataError, match="lists 6 readable images; the 80/10/10 split needs at least 10"):
        tasks.load_splits("pathfinder", root, cache_dir=tmp_path / "cache")
    (root / "metadata" / "0.npy").write_text("\n")
    with pytest.raises(DataError, match="the metadata files list no images"):
        tasks.load_splits("pathfinder", root, cache_dir=tmp_path / "cache")


def test_a_replaced_image_is_read_again_not_served_from_the_cache(tmp_path, small_pathfinder):
    import os

    from PIL import Image

    first = tasks.load_splits("pathfinder", small_pathfinder, cache_dir=tmp_path / "cache")
    every = np.concatenate([first[s].values.ravel() for s in ("train", "val", "test")])
    image = small_pathfinder / "imgs" / "0" / "sample_0.png"
    stat = image.stat()
    Image.fromarray(np.full((32, 32), 77, dtype=np.uint8)).save(image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old modification time
    again = tasks.load_splits("pathfinder", small_pathfinder, cache_dir=tmp_path / "cache")
    rows = [again[s].item(i).ravel() for s in ("train", "val", "test") for i in range(len(again[s]))]
    assert any((r == 77).all() for r in rows)
    assert not (every == 77).all()


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    write_listops(tmp_path / "lo")
    tasks.load_splits("listops", tmp_path / "lo", cache_dir=tmp_path / "cache")
    for offsets in (tmp_path / "cache").glob("listops-*/offsets.npy"):
        np.save(offsets, np.array([0, 99], dtype=np.int64))
    splits = tasks.load_splits("listops", tmp_path / "lo", cache_dir=tmp_path / "cache")
    assert splits["train"].item(0).tolist() == [listops.TOKEN_ID[t] for t in ("[MAX", "1", "2", "X")]


def test_a_missing_data_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: not a folder \(expected the listops files"):
        tasks.load_splits("listops", tmp_path / "nowhere", cache_dir=tmp_path / "cache")


def test_the_generators_refuse_impossible_requests():
    with pytest.raises(ValueError, match="no expression has min_length < length < max_length"):
        listops.generate(5, min_length=10, max_length=10)
    with pytest.raises(ValueError, match="no expression has min_length < length < max_length"):
        listops.generate(5, min_length=1, max_length=4)
    with pytest.raises(ValueError, match="holds too few distinct expressions: 10 found, 20 wanted"):
        listops.generate(20, min_length=-5, max_length=2)  # only the ten digits
    with pytest.raises(ValueError, match="every split needs at least one expression"):
        listops.write_splits("unused", (5, 0, 5))
    with pytest.raises(ValueError, match="contour_length must be >= 1 paddle"):
        pathfinder.write_dataset("unused", 4, pathfinder.LEVELS["pathfinder"], contour_length=0)
    with pytest.raises(ValueError, match="number of images must be >= 1"):
        pathfinder.write_dataset("unused", 0, pathfinder.LEVELS["pathfinder"])


def make_data(*args, cwd=None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo / "python"))
    cmd = [sys.executable, str(repo / "scripts" / "make_lra_data.py"), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train", "0"], "argument --train: must be >= 1, got 0"),
        (["--train", "-5"], "argument --train: must be >= 1, got -5"),
        (["--min-length", "60", "--max-length", "60"], "--min-length 60 --max-length 60: ListOps: no expression"),
        (["--workers", "0"], "argument --workers: must be >= 1"),
    ],
)
def test_make_lra_data_refuses_bad_arguments_at_once(tmp_path, args, message):
    done = make_data("--task", "listops", "--out", tmp_path / "out", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_make_lra_data_refuses_a_bad_contour_length(tmp_path):
    done = make_data("--task", "pathfinder", "--out", tmp_path / "out", "--contour-length", "0")
    assert done.returncode == 2 and "argument --contour-length: must be >= 1, got 0" in done.stderr


def test_regenerating_a_smaller_set_leaves_nothing_stale(tmp_path, monkeypatch, capsys):
    import runpy
    import sys
    from pathlib import Path

    monkeypatch.setattr(pathfinder, "BATCH", 4)  # images per folder: several folders from a few images
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "make_lra_data.py")
    out = tmp_path / "pf"

    def make(train):
        argv = [script, "--task", "pathfinder", "--out", str(out), "--train", str(train), "--val", "1", "--test", "1"]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as done:
            runpy.run_path(script, run_name="__main__")
        assert done.value.code == 0

    make(10)
    assert sorted(p.name for p in (out / "metadata").iterdir()) == ["0.npy", "1.npy", "2.npy"]
    make(2)
    assert sorted(p.name for p in (out / "metadata").iterdir()) == ["0.npy"]
    assert sorted(p.name for p in (out / "imgs").iterdir()) == ["0"]
    assert len((out / "metadata" / "0.npy").read_text().splitlines()) == 4
    make(2)
    assert "already generated with these settings" in capsys.readouterr().out


def test_make_lra_data_never_writes_over_files_it_did_not_make(tmp_path):
    official = tmp_path / "listops-1000"
    write_listops(official)
    done = make_data("--task", "listops", "--out", official, "--train", "5", "--val", "2", "--test", "2")
    assert done.returncode == 1 and "holds files this script did not write" in done.stderr
    assert (official / "basic_train.tsv").read_text() == "Source\tTarget\n( [MAX 1 2 ] )\t2\n"
