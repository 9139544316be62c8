"""The LRA training loop: loss falls, outputs are written, resume equals an uninterrupted run,
two-process DDP with gloo, a non-finite loss stops the run, configs and overrides."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torch_lru import train as training
from torch_lru.checkpoint import CheckpointError, load_checkpoint
from torch_lru.config import ConfigError
from torch_lru.layers import COMPILE_BLOCKERS as LAYER_BLOCKERS
from torch_lru.lra import listops

REPO = Path(__file__).resolve().parents[1]
REAL_FORWARD = training.forward


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("listops")
    listops.write_splits(folder, (256, 64, 64), seed=0, min_length=10, max_length=60)
    return folder


def tiny_config(**train):
    config = training.load_config("listops_small")
    config["model"].update(d_model=16, d_state=8, n_layers=2)
    config["train"].update(batch_size=16, epochs=2, log_every=4, eval_every=8, **train)
    config["optim"].update(lr=0.01, lru_lr=0.005)
    return config


def run(config, out, data_dir, tmp_path, **kw):
    return training.train(config, out, data_dir, "cpu", cache_dir=tmp_path / "cache", log=lambda *_: None, **kw)


def read_metrics(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_short_run_learns_and_writes_its_outputs(tmp_path, listops_dir):
    out = tmp_path / "run"
    summary = run(tiny_config(), out, listops_dir, tmp_path, max_steps=48)
    for name in ("metrics.csv", "last.pt", "best.pt", "best_model.pt", "summary.json", "curves.png"):
        assert (out / name).exists(), name
    rows = read_metrics(out / "metrics.csv")
    assert list(rows[0]) == ["step", "split", "loss", "accuracy", "lr", "tokens_per_s"]
    train_loss = [float(r["loss"]) for r in rows if r["split"] == "train"]
    assert train_loss[-1] < train_loss[0]
    assert [int(r["step"]) for r in rows if r["split"] == "val"] == [8, 16, 24, 32, 40, 48]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["steps"] == 48 and saved["best_step"] in (8, 16, 24, 32, 40, 48)
    assert saved["best_val_accuracy"] == max(float(r["accuracy"]) for r in rows if r["split"] == "val")
    assert 0 < saved["majority_test"] < 1
    # The reported test accuracy is that of the best weights on the test split, counted here apart.
    model = training.build_model(saved["config"], training.tasks.task_info("listops"))
    model.load_state_dict(load_checkpoint(out / "best_model.pt"))
    model.eval()
    test = training.tasks.load_splits("listops", listops_dir, cache_dir=tmp_path / "cache")["test"]
    with torch.no_grad():
        right = sum(
            int(model(torch.as_tensor(test.item(i)[None].astype("int64"))).argmax(-1).item() == test.labels[i])
            for i in range(len(test))
        )
    assert abs(saved["test_accuracy"] - right / len(test)) < 1e-9, (saved["test_accuracy"], right / len(test))
    assert summary["test_accuracy"] == saved["test_accuracy"]
    lrs = [float(r["lr"]) for r in rows if r["split"] == "train"]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-4  # past the warm-up: decaying


def test_warmup_then_cosine():
    factor = training.warmup_cosine(100, 0.1, 1e-3)
    assert [round(factor(s), 3) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert factor(10) == 1.0 and abs(factor(55) - (1e-3 + (1 - 1e-3) * 0.5)) < 1e-9
    assert abs(factor(100) - 1e-3) < 1e-12 and all(factor(s) >= factor(s + 1) for s in range(9, 100))


def test_resume_equals_an_uninterrupted_run(tmp_path, listops_dir):
    config = tiny_config()
    config["model"]["dropout"] = 0.1  # the dropout stream must be restored too
    run(config, tmp_path / "whole", listops_dir, tmp_path, max_steps=24)
    stopped = run(config, tmp_path / "split", listops_dir, tmp_path, max_steps=24, stop_after=12)
    assert stopped == {"stopped_at": 12}
    assert not (tmp_path / "split" / "summary.json").exists()
    run(config, tmp_path / "split", listops_dir, tmp_path, max_steps=24, resume=True)
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    split = load_checkpoint(tmp_path / "split" / "last.pt")
    assert whole["progress"]["step"] == split["progress"]["step"] == 24
    for key, value in whole["model"].items():
        assert torch.equal(value, split["model"][key]), key
    assert read_metrics(tmp_path / "whole" / "metrics.csv")[-1] == read_metrics(tmp_path / "split" / "metrics.csv")[-1]


def test_resume_needs_a_checkpoint(tmp_path, listops_dir):
    with pytest.raises(FileNotFoundError, match="last.pt does not exist"):
        run(tiny_config(), tmp_path / "none", listops_dir, tmp_path, max_steps=4, resume=True)


def poison_training_forward(monkeypatch, after: int, value=float("nan"), steps=None):
    """From the ``after``-th training forward on (or in the given ones), the logits become ``value``."""
    real_forward = REAL_FORWARD
    calls = {"train": 0}

    def poisoned(model, batch, device, amp_dtype):
        logits = real_forward(model, batch, device, amp_dtype)
        if model.training:
            calls["train"] += 1
            if (steps is None and calls["train"] > after) or (steps is not None and calls["train"] in steps):
                return logits * value
        return logits

    monkeypatch.setattr(training, "forward", poisoned)


def test_non_finite_steps_are_skipped_and_counted(tmp_path, listops_dir, monkeypatch):
    config = tiny_config()
    poison_training_forward(monkeypatch, 0, steps={5, 6})
    run(config, tmp_path / "before", listops_dir, tmp_path, max_steps=16, stop_after=4)
    poison_training_forward(monkeypatch, 0, steps={5, 6})
    run(config, tmp_path / "after", listops_dir, tmp_path, max_steps=16, stop_after=6)
    before, after = (load_checkpoint(tmp_path / name / "last.pt") for name in ("before", "after"))
    # Steps 5 and 6 changed nothing: no update, the norms' running statistics put back.
    assert after["progress"]["skipped_steps"] == 2 and after["progress"]["step"] == 6
    assert any("running_mean" in k for k in after["model"])
    for key, value in before["model"].items():
        assert torch.equal(value, after["model"][key]), key
    poison_training_forward(monkeypatch, 0, steps={5, 6})
    summary = run(config, tmp_path / "whole", listops_dir, tmp_path, max_steps=16)
    assert summary["skipped_steps"] == 2 and summary["steps"] == 16


def test_a_run_of_non_finite_steps_stops_and_keeps_the_last_good_checkpoint(tmp_path, listops_dir, monkeypatch):
    out = tmp_path / "run"
    poison_training_forward(monkeypatch, 10)
    with pytest.raises(
        training.NonFiniteLoss,
        match=r"not finite in 10 steps in a row \(the last at step 20, loss nan\): stopping; "
        r"the last good checkpoint is .*last.pt",
    ):
        run(tiny_config(), out, listops_dir, tmp_path, max_steps=40)
    kept = load_checkpoint(out / "last.pt")
    assert kept["progress"]["step"] == 16 and kept["progress"]["skipped_steps"] == 6
    model = training.build_model(kept["config"], training.tasks.task_info("listops"))
    model.load_state_dict(kept["model"])
    model.eval()
    split = training.tasks.load_splits("listops", listops_dir, cache_dir=tmp_path / "cache")["val"]
    batch = training.lra_data.collate(split, list(range(16)))
    assert torch.isfinite(model(batch["x"], batch["mask"])).all()  # the kept state gives finite outputs


def test_non_finite_weights_are_never_saved_and_a_nan_validation_never_wins(tmp_path, listops_dir, monkeypatch):
    real_evaluate = training.evaluate
    evals = {"n": 0}

    def nan_second_eval(*args):
        evals["n"] += 1
        loss, acc = real_evaluate(*args)
        return (float("nan"), 1.0) if evals["n"] == 2 else (loss, acc)

    monkeypatch.setattr(training, "evaluate", nan_second_eval)
    out = tmp_path / "run"
    with pytest.raises(training.NonFiniteLoss, match=r"the validation loss is nan at step 16: stopping"):
        run(tiny_config(), out, listops_dir, tmp_path, max_steps=40)
    assert load_checkpoint(out / "last.pt")["progress"]["step"] == 8
    assert load_checkpoint(out / "best.pt")["step"] == 8
    monkeypatch.undo()

    # Weights that became non-finite are not written: the run stops at its next save.
    original = training.train_step

    def corrupting_step(run_, batch):
        result = original(run_, batch)
        if run_.optimizer.state and evals.setdefault("steps", 0) == 0:
            with torch.no_grad():
                next(run_.model.parameters()).view(-1)[0] = float("inf")
            evals["steps"] = 1
        return result

    monkeypatch.setattr(training, "train_step", corrupting_step)
    with pytest.raises(training.NonFiniteLoss):
        run(tiny_config(), tmp_path / "inf", listops_dir, tmp_path, max_steps=40)
    assert not (tmp_path / "inf" / "last.pt").exists() and not (tmp_path / "inf" / "best.pt").exists()


def test_two_process_ddp_with_gloo(tmp_path, listops_dir):
    out = tmp_path / "ddp"
    env = dict(
        os.environ, PYTHONPATH=str(REPO / "python"), TORCH_LRU_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1"
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(REPO / "scripts" / "train_lra.py"),
        "--config",
        "listops_small",
        "--data-dir",
        str(listops_dir),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--max-steps",
        "8",
        "--set",
        "model.d_model=16",
        "--set",
        "model.d_state=8",
        "--set",
        "model.n_layers=1",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.eval_every=4",
        "--set",
        "train.log_every=4",
        "--set",
        "train.compile=true",  # DDP under torch.compile (the default for long CPU runs)
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 8 and summary["compiled"]
    # Metrics are reduced over both ranks and written once, by rank 0.
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows if r["split"] == "val"] == ["4", "8"]
    assert done.stdout.count("best val accuracy") == 1
    ckpt = load_checkpoint(out / "last.pt")
    assert len(ckpt["rng"]) == 2 and not torch.equal(ckpt["rng"][0]["cpu"], ckpt["rng"][1]["cpu"])


def test_every_config_builds_a_model():
    for name in sorted(p.stem for p in training.CONFIG_DIR.glob("*.json")):
        c = training.load_config(name)
        assert set(c) >= {"task", "_sources", "data", "model", "optim", "train"}, name
        training.build_model(c, training.tasks.task_info(c["task"]))  # every config builds a model


def synthetic_batch(info: dict, B=3, L=40, seed=0):
    """A padded batch for a task's model: token ids or pixels, a mask with short rows, and the
    second sequence of a dual task."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L, L // 2, 7][:B])
    mask = torch.arange(L)[None] < lengths[:, None]

    def sequence():
        if info["vocab_size"]:
            return torch.randint(1, info["vocab_size"], (B, L), generator=g) * mask
        return torch.rand(B, L, info["channels"], generator=g) * 2 - 1

    batch = {"x": sequence(), "mask": mask}
    if info["dual"]:
        batch.update(x2=sequence(), mask2=mask.flip(0))
    return batch


@pytest.mark.parametrize("name", sorted(p.stem for p in training.CONFIG_DIR.glob("*.json")))
def test_every_packaged_config_compiles_without_a_graph_break(name):
    """Each packaged config's model (its layer, norm, pooling, direction and head; narrower) under
    torch.compile(fullgraph=True, dynamic=True), forward and backward, masked, with bf16 autocast
    as a GPU run has it (here on the CPU), against eager."""
    import warnings

    config = training.load_config(name)
    config["model"].update(d_model=8, d_state=4, n_layers=2, dropout=0.0)  # no dropout: equal draws
    info = training.tasks.task_info(config["task"])
    torch.manual_seed(0)
    model = training.build_model(config, info)
    torch._dynamo.reset()  # each config's model is compiled afresh (see training.compile_model)
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    batch = synthetic_batch(info)
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            want = model(**batch).float()
            grads = torch.autograd.grad(want.sum(), list(model.parameters()))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*complex.*")
                got = compiled(**batch).float()
                got_grads = torch.autograd.grad(got.sum(), list(model.parameters()))
        tol = 2e-2 if autocast else 1e-5
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
        for a, b in zip(got_grads, grads):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_compile_defaults_to_long_cpu_runs_of_layers_that_compile():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training.wants_compile(None, cpu, training.COMPILE_MIN_STEPS)
    assert not training.wants_compile(None, cpu, training.COMPILE_MIN_STEPS - 1)
    assert not training.wants_compile(None, cuda, 10**6)  # not measured on a GPU yet
    assert training.wants_compile(True, cpu, 1) and not training.wants_compile(False, cpu, 10**6)
    blocked = [name for name, why in LAYER_BLOCKERS.items() if why]
    assert blocked == ["tanh_rnn", "linear_dense"]
    for name in blocked:
        assert not training.wants_compile(None, cpu, 10**6, name)
        assert not training.wants_compile(False, cpu, 10**6, name)
        with pytest.raises(training.RunError, match=f"model.layer={name} does not compile without graph breaks"):
            training.wants_compile(True, cpu, 1, name)


@pytest.mark.parametrize("layer", [name for name, why in LAYER_BLOCKERS.items() if not why])
def test_every_layer_that_compiles_does_so_once_for_all_lengths(layer):
    """fullgraph with dynamic shapes over ten lengths, masked, bidirectional: one graph (dynamo's
    limit of 8 recompilations would fail it otherwise), the same outputs and gradients as eager."""
    import warnings

    config = training.load_config("listops_small")
    config["model"].update(d_model=8, d_state=4, n_layers=1, layer=layer)
    info = training.tasks.task_info("listops")
    torch.manual_seed(0)
    model = training.build_model(config, info)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for L in (16, 23, 40, 64, 77, 100, 130, 150, 170, 200):
        batch = synthetic_batch(info, L=L, seed=L)
        want = model(**batch)
        grads = torch.autograd.grad(want.sum(), list(model.parameters()))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*complex.*")
            got = compiled(**batch)
            got_grads = torch.autograd.grad(got.sum(), list(model.parameters()))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for a, b in zip(got_grads, grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_compiled_run_agrees_with_an_eager_one_and_resumes_either_way(tmp_path, listops_dir):
    """A few steps compiled (masked batches of varied lengths, bidirectional, batch norm), stopped
    and resumed eagerly, against an eager run throughout: the same losses and weights to rounding."""
    eager, compiled = tiny_config(compile=False), tiny_config(compile=True)
    run(eager, tmp_path / "eager", listops_dir, tmp_path, max_steps=6)
    assert run(compiled, tmp_path / "mixed", listops_dir, tmp_path, max_steps=6, stop_after=3) == {"stopped_at": 3}
    first = load_checkpoint(tmp_path / "mixed" / "last.pt")["progress"]
    assert first["compile_time"] > 0 and first["train_time"] > 0
    summary = run(eager, tmp_path / "mixed", listops_dir, tmp_path, max_steps=6, resume=True)
    assert summary["compiled"] is False and summary["compile_time_s"] == first["compile_time"]
    a, b = (read_metrics(tmp_path / name / "metrics.csv") for name in ("eager", "mixed"))
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert abs(float(ra["loss"]) - float(rb["loss"])) < 1e-4, (ra, rb)
    weights = [load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("eager", "mixed")]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_the_lru_group_gets_its_own_learning_rate_and_no_weight_decay():
    config = training.load_config("listops_small")
    model = training.build_model(config, training.tasks.task_info("listops"))
    optimizer = training.build_optimizer(model, config["optim"])
    lru_group = optimizer.param_groups[2]
    names = {id(p): n for n, p in model.named_parameters()}
    in_group = {names[id(p)].rsplit(".", 1)[-1] for p in lru_group["params"]}
    assert in_group == {"nu_log", "theta_log", "gamma_log", "B_re", "B_im"} | {
        n + "_rev" for n in ("nu_log", "theta_log", "gamma_log", "B_re", "B_im")
    }
    assert lru_group["lr"] == config["optim"]["lru_lr"] and lru_group["weight_decay"] == 0
    assert optimizer.param_groups[0]["weight_decay"] == config["optim"]["weight_decay"]
    total = sum(len(g["params"]) for g in optimizer.param_groups)
    assert total == len(list(model.parameters()))


@pytest.mark.parametrize("layer", ["diag_complex", "diag_exp", "s5", "s4d", "rglru"])
def test_every_diagonal_layer_trains_its_recurrence_in_the_lru_group(layer):
    config = training.load_config("listops_small", [f"model.layer={layer}", "model.bidirectional=false"])
    model = training.build_model(config, training.tasks.task_info("listops"))
    optimizer = training.build_optimizer(model, config["optim"])
    names = {id(p): n.rsplit(".", 1)[-1] for n, p in model.named_parameters()}
    in_group = {names[id(p)] for p in optimizer.param_groups[2]["params"]}
    recurrence = {
        "diag_complex": {"lam_re", "lam_im", "B_re", "B_im"},
        "diag_exp": {"nu_log", "theta_log", "B_re", "B_im"},
        "s5": {"a_log", "omega", "log_step", "B_re", "B_im"},
        "s4d": {"a_log", "omega", "log_step", "B_re", "B_im"},
        "rglru": {"Lambda", "W_a", "b_a", "W_x", "b_x"},
    }[layer]
    assert in_group == recurrence


def test_a_hawk_model_of_rglru_blocks_trains_from_a_config(tmp_path, listops_dir):
    config = tiny_config()
    config["model"].update(layer="rglru", block="hawk", norm="rms", gate_blocks=2, a_min=0.8, a_max=0.99)
    summary = run(config, tmp_path / "run", listops_dir, tmp_path, max_steps=32)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    train_loss = [float(r["loss"]) for r in rows if r["split"] == "train"]
    assert train_loss[-1] < train_loss[0]
    model = training.build_model(summary["config"], training.tasks.task_info("listops"))
    assert type(model.blocks[0]).__name__ == "HawkBlock" and model.blocks[0].rnn.gate_blocks == 2
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match="model.block must be one of lru, hawk"):
        training.load_config("listops_small", ["model.block=griffin"])
    with pytest.raises(ConfigError, match=r"model.a_max must be in \(0, 1\)"):
        training.load_config("listops_small", ["model.a_max=1.0"])


def test_train_script_reports_bad_data_clearly(tmp_path):
    (tmp_path / "basic_train.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t11\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), TORCH_LRU_CACHE=str(tmp_path / "cache"))
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "train_lra.py"),
        "--task",
        "listops",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert f"{tmp_path / 'basic_train.tsv'}:2: expected a label 0-9 in the Target column, got '11'" in done.stderr


def test_colour_images_train_with_three_input_channels(tmp_path):
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, f)
    config = training.load_config(
        "image",
        [
            "data.grayscale=false",
            "model.d_model=8",
            "model.d_state=4",
            "model.n_layers=1",
            "train.batch_size=4",
            "train.log_every=1",
        ],
    )
    run(config, tmp_path / "out", folder, tmp_path, max_steps=2)
    state = torch.load(tmp_path / "out" / "best_model.pt", weights_only=True)
    assert state["encoder.weight"].shape == (8, 3)


# ---- hostile files, faults and changed settings ----


class Planted:
    """A pickle that would create a file when unpickled: what a hostile checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_checkpoints_holding_code_are_refused_not_run(tmp_path, listops_dir):
    import torch_lru

    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({"model": {}, "payload": Planted(marker)}, hostile)
    with pytest.raises(CheckpointError, match=r"hostile.pt: refused: it holds getattr, not only tensors"):
        load_checkpoint(hostile)
    model = torch_lru.LRU(4, 2)
    with pytest.raises(CheckpointError, match="refused"):
        torch_lru.load_state_dict(model, hostile)
    out = tmp_path / "run"
    run(tiny_config(), out, listops_dir, tmp_path, max_steps=16, stop_after=8)
    torch.save({"model": {}, "payload": Planted(marker)}, out / "last.pt")
    with pytest.raises(CheckpointError, match=r"last.pt: refused"):
        run(tiny_config(), out, listops_dir, tmp_path, max_steps=16, resume=True)
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_are_named(tmp_path, listops_dir):
    out = tmp_path / "run"
    run(tiny_config(), out, listops_dir, tmp_path, max_steps=16, stop_after=8)
    last = out / "last.pt"
    good = last.read_bytes()
    for broken in (good[: len(good) // 2], good[:64], b"", b"\x00" * 100):
        last.write_bytes(broken)
        with pytest.raises(CheckpointError, match=r"last.pt: not a readable torch.save file, truncated or corrupt"):
            run(tiny_config(), out, listops_dir, tmp_path, max_steps=16, resume=True)
    torch.save({"model": {}}, last)
    with pytest.raises(CheckpointError, match=r"last.pt: not a training checkpoint of this version \(no optimizer"):
        run(tiny_config(), out, listops_dir, tmp_path, max_steps=16, resume=True)


def test_a_full_disk_never_damages_the_last_checkpoint(tmp_path, listops_dir):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    out = tmp_path / "run"
    run(tiny_config(), out, listops_dir, tmp_path, max_steps=16, stop_after=8)
    before = (out / "last.pt").read_bytes()
    (out / "last.pt.partial").symlink_to("/dev/full")  # every write of the next checkpoint fails: ENOSPC
    with pytest.raises(CheckpointError, match=r"last.pt: could not be written .*is the disk full\?"):
        run(tiny_config(), out, listops_dir, tmp_path, max_steps=16, resume=True)
    assert (out / "last.pt").read_bytes() == before and not (out / "last.pt.partial").exists()
    run(tiny_config(), out, listops_dir, tmp_path, max_steps=16, resume=True)  # space again: it goes on


@pytest.mark.parametrize(
    "change, message",
    [
        ({"optim": {"lr": 0.02}}, "optim.lr: 0.01 in the checkpoint, 0.02 now"),
        ({"train": {"batch_size": 8}}, "train.batch_size: 16 in the checkpoint, 8 now"),
        ({"train": {"seed": 3}}, "train.seed: 0 in the checkpoint, 3 now"),
        ({"max_steps": 20}, "total_steps: 16 in the checkpoint, 20 now"),
        ({"data_dir": "copy"}, "data_dir: "),
    ],
)
def test_resume_refuses_settings_that_break_exact_resumption(tmp_path, listops_dir, change, message):
    import shutil

    out = tmp_path / "run"
    run(tiny_config(), out, listops_dir, tmp_path, max_steps=16, stop_after=8)
    config, data_dir, max_steps = tiny_config(), listops_dir, change.get("max_steps", 16)
    for section in ("optim", "train"):
        config[section].update(change.get(section, {}))
    if "data_dir" in change:
        data_dir = tmp_path / "copy"
        shutil.copytree(listops_dir, data_dir)
    with pytest.raises(training.RunError, match=r"--resume: .*last.pt was made with other settings") as info:
        run(config, out, data_dir, tmp_path, max_steps=max_steps, resume=True)
    assert message in str(info.value)
    assert load_checkpoint(out / "last.pt")["config"]["optim"]["lr"] == 0.01  # nothing recorded that is not in use


def test_resume_gives_the_same_metrics_file_as_an_uninterrupted_run(tmp_path, listops_dir):
    config = tiny_config()
    config["train"].update(log_every=4, eval_every=6)  # a checkpoint in the middle of a logging window
    run(config, tmp_path / "whole", listops_dir, tmp_path, max_steps=24)
    run(config, tmp_path / "split", listops_dir, tmp_path, max_steps=24, stop_after=6)
    run(config, tmp_path / "split", listops_dir, tmp_path, max_steps=24, resume=True)
    timeless = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]  # noqa: E731
    whole = read_metrics(tmp_path / "whole" / "metrics.csv")
    assert timeless(read_metrics(tmp_path / "split" / "metrics.csv")) == timeless(whole)
    assert [r["step"] for r in whole if r["split"] == "train"] == ["4", "8", "12", "16", "20", "24"]


def test_empty_splits_and_bad_settings_fail_at_once(tmp_path, listops_dir):
    import shutil

    empty = tmp_path / "empty"
    shutil.copytree(listops_dir, empty)
    (empty / "basic_train.tsv").write_text("Source\tTarget\n")
    with pytest.raises(training.tasks.DataError, match="basic_train.tsv: holds no expressions after its header"):
        run(tiny_config(), tmp_path / "out", empty, tmp_path, max_steps=4)
    with pytest.raises(training.RunError, match="max_steps must be >= 1, got 0"):
        run(tiny_config(), tmp_path / "out", listops_dir, tmp_path, max_steps=0)
    with pytest.raises(training.RunError, match="task listops needs its data folder"):
        run(tiny_config(), tmp_path / "out", None, tmp_path, max_steps=4)


def test_the_training_script_reports_a_damaged_checkpoint_in_one_line(tmp_path, listops_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), TORCH_LRU_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, str(REPO / "scripts" / "train_lra.py"), "--config", "listops_small", "--resume"]
    cmd += ["--data-dir", str(listops_dir), "--out", str(out), "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"train_lra.py: {out / 'last.pt'}: not a readable torch.save file" in done.stderr
