"""Generation edge cases through PRTForCausalLM.generate on a tiny model with a LoRA twin reward, both backends:
an empty prompt, max_tokens=0, stop strings that span tokens, a prompt longer than the context window."""

from __future__ import annotations

import json

import pytest

from prtcore import PRTForCausalLM
from prtcore.errors import GenerationError, PRTError

from .conftest import BACKENDS

PROMPT = "What is the capital"


@pytest.fixture(scope="module")
def reward(rws, tmp_path_factory):
    """A LoRA twin reward briefly trained on the tiny source (with the first backend), so that greedy output is
    readable text."""
    from prtcore import RewardConfig
    from prtcore.config import LoRAConfig, TrainingConfig
    from prtcore.training import train_reward

    path = tmp_path_factory.mktemp("edge") / "reward"
    train_reward(rws["source"], rws["data"], path, RewardConfig(kind="twin", lora=LoRAConfig(rank=4, num_layers=2)),
                 TrainingConfig(iters=12, batch_size=4, learning_rate=1e-2, seed=3, steps_per_eval=1000, val_batches=1),
                 backend=BACKENDS[0])
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def model(request, rws, reward):
    return PRTForCausalLM.from_pretrained(rws["source"], reward, backend=request.param)


def test_empty_prompt_is_a_clear_error(model):
    with pytest.raises(GenerationError, match="empty"):
        model.generate("", max_tokens=4)


def test_zero_max_tokens_returns_the_empty_string(model):
    assert model.generate(PROMPT, max_tokens=0) == ""


def test_stop_strings_spanning_tokens_end_the_text_before_them(model):
    full = model.generate(PROMPT, max_tokens=8)
    assert len(full) >= 3
    checked = 0
    for cut in range(1, len(full) - 1):
        stop = full[cut: cut + 3]  # three characters: usually parts of two or more tokens
        if not stop.strip() or '\ufffd' in stop or full.index(stop) != cut:
            continue
        out = model.generate(PROMPT, max_tokens=8, stop=[stop])
        assert out == full[:cut], (stop, out, full)
        checked += 1
    assert checked


def test_prompt_longer_than_the_context_window_is_a_clear_error(model, rws):
    limit = json.loads((rws["source"] / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(PRTError, match="context|max_position_embeddings|too long"):
        model.generate("capital " * (limit + 8), max_tokens=2)
