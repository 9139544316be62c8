"""The Python and C++ modules agree: one seed draws the same parameters, and a state dict saved by
either language gives the same outputs in the other (tests/parity/lru_parity.cpp is the C++ side)."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

import torch_lru

REPO = Path(__file__).resolve().parents[1]
BINARY = Path(os.environ.get("TORCH_LRU_CPP_BUILD", REPO / "build-cpp")) / "lru_parity"

if not BINARY.exists():
    if os.environ.get("TORCH_LRU_REQUIRE_CPP") == "1":
        raise RuntimeError(f"{BINARY} is missing: build it with scripts/build_cpp.sh")
    pytest.skip(f"{BINARY} not built (scripts/build_cpp.sh builds it)", allow_module_level=True)

CONFIGS = {
    "tokens": dict(d_output=3, d_model=16, d_state=8, n_layers=2, vocab_size=11),
    "bidirectional_last": dict(
        d_output=4, d_model=12, d_state=6, n_layers=2, vocab_size=7, bidirectional=True, pooling="last"
    ),
    "real_layernorm_postnorm": dict(
        d_output=2,
        d_model=8,
        d_state=10,
        n_layers=3,
        d_input=3,
        norm="layer",
        prenorm=False,
        r_min=0.9,
        r_max=0.999,
        max_phase=0.31,
    ),
    "dual": dict(d_output=2, d_model=8, d_state=4, n_layers=1, vocab_size=9, dual=True),
}
# Every ablation layer, both directions (the *_rev parameters), through the same block and model.
for _layer in ("tanh_rnn", "linear_dense", "diag_complex", "diag_exp", "s5", "s4d", "rglru"):
    CONFIGS[f"layer_{_layer}"] = dict(
        d_output=3, d_model=8, d_state=6, n_layers=2, vocab_size=11, bidirectional=True, layer=_layer
    )
# Griffin's RG-LRU with block-diagonal gates, one direction, in Hawk's block (RMSNorm), and in
# Hawk's block around the LRU with post-norm BatchNorm.
CONFIGS["rglru_blocks_unidirectional"] = dict(
    d_output=3, d_model=8, d_state=12, n_layers=2, vocab_size=11, layer="rglru", gate_blocks=3, a_min=0.5, a_max=0.9
)
CONFIGS["hawk_rglru_rms"] = dict(
    d_output=2, d_model=8, d_state=12, n_layers=2, d_input=3, layer="rglru", block="hawk", norm="rms", gate_blocks=2
)
CONFIGS["hawk_lru_batch_postnorm"] = dict(
    d_output=2, d_model=8, d_state=6, n_layers=2, vocab_size=7, block="hawk", prenorm=False, bidirectional=True
)


def cpp(*args, **options):
    flags = [f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in options.items()]
    done = subprocess.run([str(BINARY), *map(str, args), *flags], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def inputs_for(config, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, L = 4, 23
    mask = torch.arange(L)[None] < torch.tensor([23, 12, 5, 1])[:, None]
    if config.get("vocab_size"):
        x = torch.randint(0, config["vocab_size"], (B, L), generator=g)
    else:
        x = torch.randn(B, L, config["d_input"], generator=g)
    inputs = {"x": x, "mask": mask}
    if config.get("dual"):
        inputs.update(x2=torch.randint(0, config["vocab_size"], (B, L), generator=g), mask2=mask.flip(0))
    return inputs


@pytest.mark.parametrize("name", CONFIGS)
def test_one_seed_draws_the_same_model_in_both_languages(tmp_path, name):
    config = CONFIGS[name]
    cpp("init", tmp_path / "cpp.pt", seed=7, **config)
    saved = torch.load(tmp_path / "cpp.pt", weights_only=True)
    torch.manual_seed(7)
    model = torch_lru.LRUModel(**config)
    expected = model.state_dict()
    assert set(saved) == set(expected)
    for key, value in expected.items():
        assert saved[key].dtype == value.dtype and torch.equal(saved[key], value), key
    model.load_state_dict(saved)  # and it loads as a Python checkpoint


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("train", [False, True])
def test_a_trained_python_model_gives_the_same_outputs_in_cpp(tmp_path, name, train):
    config = CONFIGS[name]
    torch.manual_seed(1)
    model = torch_lru.LRUModel(**config)
    # A few optimiser steps, so parameters and running statistics are no longer their initial values.
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for seed in range(3):
        batch = inputs_for(config, seed + 10)
        loss = model(**batch).logsumexp(-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    torch_lru.save_state_dict(model, tmp_path / "model.pt")
    batch = inputs_for(config)
    torch.save(batch, tmp_path / "inputs.pt")
    model.train(train)
    with torch.no_grad():
        expected = model(**batch)
    cpp("run", tmp_path / "model.pt", tmp_path / "inputs.pt", tmp_path / "out.pt", train=train, **config)
    got = torch.load(tmp_path / "out.pt", weights_only=True)["y"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # A training-mode pass updates the running statistics identically too.
    state = torch.load(tmp_path / "out.pt.state", weights_only=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_cpp_explains_why_it_cannot_read_an_ordered_dict(tmp_path):
    torch.save(torch_lru.LRUModel(**CONFIGS["tokens"]).state_dict(), tmp_path / "model.pt")
    torch.save(inputs_for(CONFIGS["tokens"]), tmp_path / "inputs.pt")
    flags = [f"{k}={v}" for k, v in CONFIGS["tokens"].items()]
    args = [str(BINARY), "run", tmp_path / "model.pt", tmp_path / "inputs.pt", tmp_path / "out.pt", *flags]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 1 and "torch_lru.save_state_dict" in done.stderr


def test_cpp_refuses_a_checkpoint_of_another_model(tmp_path):
    torch_lru.save_state_dict(torch_lru.LRUModel(**CONFIGS["tokens"]), tmp_path / "model.pt")
    torch.save(inputs_for(CONFIGS["tokens"]), tmp_path / "inputs.pt")
    options = dict(CONFIGS["tokens"], n_layers=3)
    flags = [f"{k}={v}" for k, v in options.items()]
    args = [str(BINARY), "run", tmp_path / "model.pt", tmp_path / "inputs.pt", tmp_path / "out.pt", *flags]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 1
    assert "missing keys: blocks.2." in done.stderr and "unexpected keys: none" in done.stderr
    options = dict(CONFIGS["tokens"], d_state=9)
    flags = [f"{k}={v}" for k, v in options.items()]
    args = [str(BINARY), "run", tmp_path / "model.pt", tmp_path / "inputs.pt", tmp_path / "out.pt", *flags]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 1 and "blocks.0.lru.B_im has shape [8, 16] but the module's is [9, 16]" in done.stderr
