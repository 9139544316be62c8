"""Run configurations: the packaged configs, the schema every config is checked against, and
``key.sub=value`` overrides.

A config is plain JSON data with the sections ``task``, ``data``, ``model``, ``optim`` and
``train`` (and ``_sources``, free text on where each value comes from). Every key and value is
checked against :data:`SCHEMA` when a config is loaded: an unknown key, a value of the wrong type
or out of range is a :class:`ConfigError` whose one-line message names the key; missing optional
keys get their defaults, so the config a run records is the config it uses.
"""

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .layers import LAYERS
from .lra.tasks import TASKS
from .modules import BLOCKS, NORM_KINDS, POOLINGS, LRUModel

CONFIG_DIR = Path(__file__).resolve().parent / "lra" / "configs"
REQUIRED = object()  # a key every config must have


class ConfigError(ValueError):
    """A config key or value that is unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Field:
    """One config entry: its type (bool, int, float, str or list), a range or choice check that
    returns what is expected when the value fails it, whether null is allowed, and its default."""

    kind: type
    check: Optional[Callable[[Any], Optional[str]]] = None
    nullable: bool = False
    default: Any = REQUIRED


def at_least(low):
    return lambda v: None if v >= low else f">= {low}"


def positive(v):
    return None if v > 0 else "> 0"


def fraction(v):  # [0, 1)
    return None if 0 <= v < 1 else "in [0, 1)"


def one_of(*choices):
    return lambda v: None if v in choices else f"one of {', '.join(map(str, choices))}"


def betas(v):
    ok = len(v) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in v)
    return None if ok else "a list of two numbers in [0, 1)"


ROWS = {f"{split}_rows": Field(int, at_least(1), nullable=True, default=None) for split in ("train", "val", "test")}
# The data options each task's reader takes (torch_lru.lra.tasks), besides the row limits.
DATA = {
    "listops": {},
    "text": {"max_length": Field(int, at_least(1), default=4096)},
    "retrieval": {"max_length": Field(int, at_least(1), default=4000)},
    "image": {"grayscale": Field(bool, default=True)},
    "fmnist": {},
    "pathfinder": {"split_seed": Field(int, default=0)},
    "pathx": {"split_seed": Field(int, default=0)},
}
MODEL = {
    "d_model": Field(int, at_least(1)),
    "d_state": Field(int, at_least(1)),
    "n_layers": Field(int, at_least(1)),
    # The LRA tasks classify whole sequences: per-step outputs (the model's "none") have no label here.
    "pooling": Field(str, one_of(*(p for p in POOLINGS if p != "none"))),
    "bidirectional": Field(bool),
    "norm": Field(str, one_of(*NORM_KINDS)),
    "prenorm": Field(bool),
    "dropout": Field(float, fraction),
    "r_min": Field(float, fraction),
    "r_max": Field(float, lambda v: None if 0 < v <= 1 else "in (0, 1]"),
    "max_phase": Field(float, positive),
    "layer": Field(str, one_of(*LAYERS)),
    "block": Field(str, one_of(*BLOCKS)),
    # The rglru layer's: its gates' diagonal blocks (a divisor of d_state) and the initial a^c range.
    "gate_blocks": Field(int, at_least(1)),
    "a_min": Field(float, lambda v: None if 0 < v < 1 else "in (0, 1)"),
    "a_max": Field(float, lambda v: None if 0 < v < 1 else "in (0, 1)"),
}
# Model keys a config may leave out take LRUModel's own defaults (one source of truth).
for _name, _field in MODEL.items():
    MODEL[_name] = Field(_field.kind, _field.check, default=inspect.signature(LRUModel).parameters[_name].default)
OPTIM = {
    "lr": Field(float, positive),
    "lru_lr": Field(float, positive),
    "weight_decay": Field(float, at_least(0)),
    "warmup_fraction": Field(float, fraction, default=0.1),
    "min_lr": Field(float, at_least(0), default=1e-7),
    "grad_clip": Field(float, positive, nullable=True, default=None),
    "betas": Field(list, betas, default=[0.9, 0.999]),
}
TRAIN = {
    "batch_size": Field(int, at_least(1)),
    "epochs": Field(int, at_least(1)),
    "max_steps": Field(int, at_least(1), nullable=True, default=None),
    "seed": Field(int, default=0),
    "log_every": Field(int, at_least(1), default=50),
    "eval_every": Field(int, at_least(1), nullable=True, default=None),  # null: once per epoch
    "amp": Field(str, one_of("bf16"), nullable=True, default=None),  # bf16 autocast on a GPU
    # Steps in a row whose loss or gradient is not finite (each skipped, as a grad scaler does)
    # before the run stops.
    "max_skipped_steps": Field(int, at_least(1), default=10),
    # torch.compile of the training step's model (dynamic shapes; fullgraph on one process). null:
    # on for a CPU run of at least COMPILE_MIN_STEPS steps, where it was measured to pay for its
    # compilation, if the layer compiles without graph breaks (torch_lru.train.wants_compile); off
    # on a GPU until measured there.
    "compile": Field(bool, nullable=True, default=None),
}
SCHEMA = {"data": DATA, "model": MODEL, "optim": OPTIM, "train": TRAIN}
TOP = ("task", "_sources", "data_dir", *SCHEMA)


def _type_name(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}[kind]


def _check_value(key: str, field: Field, value):
    """The value, checked (an int is a float too); raises ConfigError naming the key."""
    if value is None:
        if field.nullable:
            return None
        raise ConfigError(f"config: {key} must be {_type_name(field.kind)}, got null")
    kind = field.kind
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if kind is float and ok and not math.isfinite(value):
        ok = False
    if not ok:
        raise ConfigError(f"config: {key} must be {_type_name(kind)}, got {json.dumps(value)}")
    problem = field.check(value) if field.check else None
    if problem:
        raise ConfigError(f"config: {key} must be {problem}, got {json.dumps(value)}")
    return value


def parse_value(key: str, field: Field, raw: str):
    """An override's text as the field's type: 'false' for a bool, '8' for an int, '[0.9, 0.95]'
    for a list, 'null' for an optional entry; anything else is a ConfigError."""
    if raw.strip() == "null":
        return _check_value(key, field, None)
    if field.kind is str:
        return _check_value(key, field, raw)
    if field.kind is bool:
        if raw.strip().lower() not in ("true", "false"):
            raise ConfigError(f"config: {key} must be true or false, got {raw!r}")
        return raw.strip().lower() == "true"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"config: {key} must be {_type_name(field.kind)}, got {raw!r}") from None
    if field.kind is int and isinstance(value, float):
        raise ConfigError(f"config: {key} must be an integer, got {raw!r}")
    return _check_value(key, field, value)


def _known(fields) -> str:
    return ", ".join(sorted(fields))


def _fields(section: str, task: str) -> dict:
    return {**ROWS, **DATA[task]} if section == "data" else SCHEMA[section]


def check_config(config: dict) -> dict:
    """A copy of ``config`` with every key and value checked and the defaults filled in."""
    if not isinstance(config, dict):
        raise ConfigError(f"config: expected a JSON object, got {type(config).__name__}")
    unknown = [k for k in config if k not in TOP]
    if unknown:
        raise ConfigError(f"config: unknown key {unknown[0]!r} at the top level; the keys are {_known(TOP)}")
    task = config.get("task")
    if task not in TASKS:
        raise ConfigError(f"config: task must be one of {', '.join(TASKS)}, got {json.dumps(task)}")
    out = {"task": task, "_sources": config.get("_sources", {})}
    if config.get("data_dir") is not None:
        out["data_dir"] = _check_value("data_dir", Field(str), config["data_dir"])
    for section in SCHEMA:
        given = config.get(section, {})
        if not isinstance(given, dict):
            raise ConfigError(f"config: {section} must be an object, got {json.dumps(given)}")
        fields = _fields(section, task)
        for key in given:
            if key not in fields:
                raise ConfigError(
                    f"config: unknown key '{section}.{key}'; the keys of {section} (task {task}) are "
                    f"{_known(fields) or 'none but the row limits'}"
                )
        checked = {}
        for key, field in fields.items():
            if key in given:
                checked[key] = _check_value(f"{section}.{key}", field, given[key])
            elif field.default is REQUIRED:
                raise ConfigError(f"config: {section}.{key} is missing ({_type_name(field.kind)})")
            else:
                checked[key] = field.default
        out[section] = checked
    model, optim = out["model"], out["optim"]
    if model["r_min"] > model["r_max"]:
        raise ConfigError(f"config: model.r_min ({model['r_min']}) must not exceed model.r_max ({model['r_max']})")
    if optim["min_lr"] > optim["lr"]:
        raise ConfigError(f"config: optim.min_lr ({optim['min_lr']}) must not exceed optim.lr ({optim['lr']})")
    return out


def apply_override(config: dict, item: str) -> None:
    """Sets ``section.key=value`` in ``config`` (a loaded config), the value parsed as its type."""
    key, eq, raw = item.partition("=")
    if not eq:
        raise ConfigError(f"override {item!r} is not key=value")
    section, dot, leaf = key.partition(".")
    if not dot or "." in leaf:
        if key == "task":
            raise ConfigError("override task=...: choose the task with --task or --config")
        raise ConfigError(f"override {item!r}: the key must be section.key, one of the sections {_known(SCHEMA)}")
    if section not in SCHEMA:
        raise ConfigError(f"override {item!r}: unknown section {section!r}; the sections are {_known(SCHEMA)}")
    fields = _fields(section, config["task"])
    if leaf not in fields:
        raise ConfigError(
            f"override {item!r}: unknown key '{key}'; the keys of {section} (task {config['task']}) are "
            f"{_known(fields) or 'none but the row limits'}"
        )
    config.setdefault(section, {})[leaf] = parse_value(key, fields[leaf], raw)


def load_config(path_or_task: str, overrides=()) -> dict:
    """A config file, or a task name (its packaged config), with ``key.sub=value`` overrides;
    checked against the schema, defaults filled in."""
    path = Path(path_or_task)
    if not path.exists():
        path = CONFIG_DIR / f"{path_or_task}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise FileNotFoundError(f"no config {path_or_task!r} (a JSON file, or one of: {known})")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a JSON file ({e})") from None
    try:
        config = check_config(config)
        for item in overrides:
            apply_override(config, item)
        return check_config(config)
    except ConfigError as e:
        raise ConfigError(f"{e} (config {path})") from None
