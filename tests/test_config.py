"""Run configurations: every packaged config passes the schema; unknown keys, wrong types and
values out of range are one-line errors naming the key; overrides are parsed as their types."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torch_lru import config as cfg
from torch_lru.modules import LRUModel

REPO = Path(__file__).resolve().parents[1]


def test_every_packaged_config_passes_and_gets_its_defaults():
    for path in sorted(cfg.CONFIG_DIR.glob("*.json")):
        config = cfg.load_config(path.stem)
        assert config["train"]["max_skipped_steps"] == 10 and config["model"]["layer"] == "lru", path
        assert cfg.check_config(config) == config  # checking is idempotent


def test_model_keys_are_lrumodel_arguments_with_its_defaults():
    parameters = inspect.signature(LRUModel).parameters
    for name, field in cfg.MODEL.items():
        assert field.default == parameters[name].default, name


def test_overrides_are_parsed_as_their_types():
    c = cfg.load_config(
        "listops",
        [
            "train.batch_size=8",
            "model.dropout=0.25",
            "model.bidirectional=False",
            "model.prenorm=true",
            "optim.lr=1e-3",
            "optim.betas=[0.9, 0.95]",
            "train.eval_every=null",
            "model.layer=s5",
        ],
    )
    assert c["train"]["batch_size"] == 8 and c["model"]["dropout"] == 0.25
    assert c["model"]["bidirectional"] is False and c["model"]["prenorm"] is True
    assert c["optim"]["lr"] == 1e-3 and c["optim"]["betas"] == [0.9, 0.95]
    assert c["train"]["eval_every"] is None and c["model"]["layer"] == "s5"


@pytest.mark.parametrize(
    "override, message",
    [
        ("trian.batch_size=8", "unknown section 'trian'; the sections are data, model, optim, train"),
        ("optim.momentum=0.9", "unknown key 'optim.momentum'; the keys of optim (task listops) are betas,"),
        ("data.grayscale=true", "unknown key 'data.grayscale'; the keys of data (task listops) are test_rows,"),
        ("model.bidirectional=yes", "model.bidirectional must be true or false, got 'yes'"),
        ("train.batch_size=8.7", "train.batch_size must be an integer, got '8.7'"),
        ("train.batch_size=abc", "train.batch_size must be an integer, got 'abc'"),
        ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
        ("train.batch_size=-3", "train.batch_size must be >= 1, got -3"),
        ("train.log_every=0", "train.log_every must be >= 1, got 0"),
        ("train.eval_every=0", "train.eval_every must be >= 1, got 0"),
        ("optim.lr=0", "optim.lr must be > 0, got 0.0"),
        ("optim.lr=-0.1", "optim.lr must be > 0, got -0.1"),
        ("optim.lr=nan", "optim.lr must be a number, got 'nan'"),
        ("optim.betas=0.9", "optim.betas must be a list, got 0.9"),
        ("optim.betas=[0.9]", "optim.betas must be a list of two numbers in [0, 1), got [0.9]"),
        ("model.dropout=1.5", "model.dropout must be in [0, 1), got 1.5"),
        ("model.pooling=max", 'model.pooling must be one of mean, last, got "max"'),
        ("model.layer=gru", "model.layer must be one of tanh_rnn,"),
        ("model.r_min=0.999", "model.r_min (0.999) must not exceed model.r_max (0.99)"),
        ("model.d_model=null", "model.d_model must be an integer, got null"),
        ("train.amp=fp16", 'train.amp must be one of bf16, got "fp16"'),
        ("train.compile=maybe", "train.compile must be true or false, got 'maybe'"),
        ("train.batch_size", "override 'train.batch_size' is not key=value"),
        ("batch_size=8", "the key must be section.key"),
        ("task=text", "choose the task with --task or --config"),
    ],
)
def test_bad_overrides_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load_config("listops", [override])
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_a_config_file_is_checked_like_an_override(tmp_path):
    config = json.loads((cfg.CONFIG_DIR / "listops.json").read_text())
    config["train"]["bacth_size"] = 3
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(config))
    with pytest.raises(cfg.ConfigError, match=r"unknown key 'train.bacth_size'.*\(config .*mine.json\)"):
        cfg.load_config(str(path))
    config["train"].pop("bacth_size")
    config["model"]["bidirectional"] = "False"  # a string is not a bool
    path.write_text(json.dumps(config))
    with pytest.raises(cfg.ConfigError, match='model.bidirectional must be true or false, got "False"'):
        cfg.load_config(str(path))
    del config["train"]["batch_size"]
    config["model"]["bidirectional"] = False
    path.write_text(json.dumps(config))
    with pytest.raises(cfg.ConfigError, match=r"train.batch_size is missing"):
        cfg.load_config(str(path))
    path.write_text("{ not json")
    with pytest.raises(cfg.ConfigError, match="not a JSON file"):
        cfg.load_config(str(path))
    with pytest.raises(FileNotFoundError, match="one of: fmnist, image, listops"):
        cfg.load_config("nonsense")


def test_task_specific_data_keys():
    assert cfg.load_config("image", ["data.grayscale=false"])["data"]["grayscale"] is False
    assert cfg.load_config("text", ["data.max_length=1000"])["data"]["max_length"] == 1000
    with pytest.raises(cfg.ConfigError, match="unknown key 'data.max_length'"):
        cfg.load_config("image", ["data.max_length=1000"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "train.batch_size=abc"], "train_lra.py: config: train.batch_size must be an integer, got 'abc'"),
        (["--set", "trian.batch_size=8"], "train_lra.py: override 'trian.batch_size=8': unknown section"),
        (["--max-steps", "0"], "argument --max-steps: must be >= 1, got 0"),
        (["--max-steps", "-5"], "argument --max-steps: must be >= 1, got -5"),
    ],
)
def test_the_training_script_reports_config_errors_in_one_line(tmp_path, args, message):
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    cmd = [sys.executable, str(REPO / "scripts" / "train_lra.py"), "--task", "listops", "--out", str(tmp_path), *args]
    done = subprocess.run(cmd + ["--data-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
