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
from torch_lru.lra import listops

REPO = Path(__file__).resolve().parents[1]


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
    assert 0 <= saved["test_accuracy"] <= 1 and 0 < saved["majority_test"] < 1
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
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)
    split = torch.load(tmp_path / "split" / "last.pt", weights_only=False)
    assert whole["state"]["step"] == split["state"]["step"] == 24
    for key, value in whole["model"].items():
        assert torch.equal(value, split["model"][key]), key
    assert read_metrics(tmp_path / "whole" / "metrics.csv")[-1] == read_metrics(tmp_path / "split" / "metrics.csv")[-1]


def test_resume_needs_a_checkpoint(tmp_path, listops_dir):
    with pytest.raises(FileNotFoundError, match="last.pt does not exist"):
        run(tiny_config(), tmp_path / "none", listops_dir, tmp_path, max_steps=4, resume=True)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, listops_dir, monkeypatch):
    out = tmp_path / "run"
    real_forward = training.forward
    calls = {"train": 0}

    def poisoned(model, batch, device, amp_dtype):
        logits = real_forward(model, batch, device, amp_dtype)
        if model.training:
            calls["train"] += 1
            if calls["train"] > 10:
                return logits * float("nan")
        return logits

    monkeypatch.setattr(training, "forward", poisoned)
    with pytest.raises(
        training.NonFiniteLoss, match=r"loss is nan at step 11: stopping; the last good checkpoint is .*last.pt"
    ):
        run(tiny_config(), out, listops_dir, tmp_path, max_steps=40)
    kept = torch.load(out / "last.pt", weights_only=False)
    assert kept["state"]["step"] == 8
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


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
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 8
    # Metrics are reduced over both ranks and written once, by rank 0.
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows if r["split"] == "val"] == ["4", "8"]
    assert done.stdout.count("best val accuracy") == 1
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert len(ckpt["rng"]) == 2 and not torch.equal(ckpt["rng"][0]["cpu"], ckpt["rng"][1]["cpu"])


def test_configs_and_overrides():
    config = training.load_config("listops", ["train.batch_size=8", "model.dropout=0.25", "data.note=text"])
    assert (
        config["train"]["batch_size"] == 8 and config["model"]["dropout"] == 0.25 and config["data"]["note"] == "text"
    )
    with pytest.raises(FileNotFoundError, match="one of: fmnist, image, listops"):
        training.load_config("nonsense")
    with pytest.raises(ValueError, match="is not key=value"):
        training.load_config("listops", ["train.batch_size"])
    for name in sorted(p.stem for p in training.CONFIG_DIR.glob("*.json")):
        c = training.load_config(name)
        assert set(c) >= {"task", "_sources", "data", "model", "optim", "train"}, name
        training.build_model(c, training.tasks.task_info(c["task"]))  # every config builds a model


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


@pytest.mark.parametrize("layer", ["diag_complex", "diag_exp", "s5", "s4d"])
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
    }[layer]
    assert in_group == recurrence


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
