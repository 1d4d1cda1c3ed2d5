"""A run that would train nothing is an error, not a result: when the reward's gradients overflow float32 (a λ so
small or an entropy coefficient so large, or a source whose hidden states are huge), torch's gradient clipping
scales every gradient to 0 and mlx's Adam gets an infinite second moment, so its update is 0. The run stops at its
first step with a one-line TrainingError naming λ and the entropy coefficient, and publishes no artifact. Normal
runs, of zero-initialised rewards too, are unaffected."""

from __future__ import annotations

import shutil

import attrs
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from prtcore.cli.main import main
from prtcore.config import RewardConfig, TrainingConfig
from prtcore.errors import TrainingError
from prtcore.training import train_reward

from .conftest import BACKENDS

CONFIG = TrainingConfig(iters=2, batch_size=4, save_every=1, steps_per_eval=10, val_batches=1)
LORA = {"rank": 4, "num_layers": 1}


@pytest.fixture(scope="module")
def huge_hidden(rws, tmp_path_factory):
    """The tiny source with its final norm scaled by 1e19: hidden states so large that a twin reward's gradients
    overflow at the default λ and entropy coefficient (settings no range check refuses)."""
    path = tmp_path_factory.mktemp("huge-hidden") / "source"
    shutil.copytree(rws["source"], path)
    weights = load_file(str(path / "model.safetensors"))
    weights["model.norm.weight"] = weights["model.norm.weight"] * np.float32(1e19)
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("lam,entropy_coeff", [(1e-30, 0.05), (1.0, 1e30)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reward_without_gradient_stops_at_the_first_step(rws, backend, lam, entropy_coeff, tmp_path):
    with attrs.validators.disabled():  # values prtcore.config refuses: the run must not train nothing either
        reward = RewardConfig(kind="linear", lam=lam, entropy_coeff=entropy_coeff)
    with pytest.raises(TrainingError) as caught:
        train_reward(rws["source"], rws["data"], tmp_path, reward, CONFIG, backend=backend)
    message = str(caught.value)
    assert message.startswith("step 1: ") and "\n" not in message, message
    assert f"λ {lam:g} and entropy coefficient {entropy_coeff:g}" in message and "--lambda" in message, message
    assert not (tmp_path / "prt_config.json").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_prt_train_exits_2_with_one_line_and_publishes_nothing(rws, huge_hidden, backend, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("PRT_QUIET", "1")
    out = tmp_path / "out"
    code = main(["train", "--backend", backend, "--model", str(huge_hidden), "--data", str(rws["data"]),
                 "--output-dir", str(out), "--reward", "twin", "--lora-r", "4", "--num-layers", "1",
                 "--batch-size", "4", "--iters", "2", "--save-every", "1", "--steps-per-eval", "10",
                 "--val-batches", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "step 1: " in err and "λ 1 and entropy coefficient 0" in err, err
    assert not (out / "prt_config.json").exists() and not (out / "best").exists()


@pytest.mark.parametrize("reward", [RewardConfig(kind="linear"), RewardConfig(kind="twin", init="zero_head", lora=LORA),
                                    RewardConfig(kind="twin", lora=LORA)], ids=["linear", "zero_head", "twin"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_initialised_rewards_train(rws, backend, reward, tmp_path):
    """A zero-initialised head (or LoRA B) gets a non-zero gradient at step 1: the check lets it train."""
    summary = train_reward(rws["source"], rws["data"], tmp_path, reward, CONFIG, backend=backend)
    assert summary["steps"] == CONFIG.iters and (tmp_path / "prt_config.json").exists()
