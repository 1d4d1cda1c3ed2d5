"""Artifacts cross backends: torch writes → mlx reads, and mlx writes (re-saving what it read) → torch reads.

Each side computes the reward logits on its own base model's hidden states; they agree within 1e-4.
"""

import json

import numpy as np
import pytest
import torch

from prtcore import RewardArtifact, RewardConfig
from prtcore.testing import reference

pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

IDS = [[3, 17, 42, 8, 99, 5, 23, 61, 7]]
ATOL = 1e-4


@pytest.fixture(scope="module")
def mlx_backend():
    import prtcore

    return prtcore.get_backend("mlx")


def reward_logits(backend, reward, base):
    ids = backend.asarray(IDS)
    hidden = base.forward(ids, hidden=True).hidden if reward.reads_source_hidden else None
    return np.asarray(backend.to_numpy(reward.forward(ids, source_hidden=hidden)), dtype=np.float64)


def torch_reward(backend, source, kind, fine_tune_type="lora", init="copy"):
    config = RewardConfig(kind=kind, fine_tune_type=fine_tune_type, init=init, lora={"rank": 4, "num_layers": 1},
                          d_model=32, num_layers=2, num_heads=4, ffn_dim=48)
    reward = backend.create_reward(config, source)
    if kind != "twin":
        tensors = reference.random_reward_tensors(config, source.hidden_size, source.vocab_size, seed=2)
        reward.module.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    else:
        gen = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for p in reward.trainable_parameters().values():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return reward


@pytest.mark.parametrize("kind,fine_tune_type,init", [
    ("linear", "lora", "copy"), ("transformer", "lora", "copy"), ("twin", "lora", "copy"),
    ("twin", "lora", "zero_head"), ("twin", "full", "copy"),
])
def test_torch_and_mlx_read_each_others_artifacts(backend, mlx_backend, source_dir, tmp_path, kind, fine_tune_type, init):
    source = backend.load_base(source_dir)
    reward = torch_reward(backend, source, kind, fine_tune_type, init)
    want = reward_logits(backend, reward, source)
    path = reward.save(tmp_path / "torch", source=source, vocab_size=len(source.tokenizer))

    needs_source = kind != "twin" or fine_tune_type == "lora"
    mlx_source = mlx_backend.load_base(source_dir)
    mlx_reward = mlx_backend.load_reward(RewardArtifact.open(path), mlx_source if needs_source else None)
    np.testing.assert_allclose(reward_logits(mlx_backend, mlx_reward, mlx_source), want, atol=ATOL)

    back = mlx_reward.save(tmp_path / "mlx", source=mlx_source, vocab_size=len(mlx_source.tokenizer))
    artifact = RewardArtifact.open(back)
    assert artifact.meta["created_by"]["backend"] == "mlx"
    again = backend.load_reward(artifact, backend.load_base(source_dir) if needs_source else None)
    np.testing.assert_allclose(reward_logits(backend, again, source), want, atol=ATOL)


# ---------------------------------------------------------------------------------------------- plain mlx-lm
# transformers 5 saves rope settings only under `rope_parameters`; plain mlx-lm reads top-level `rope_theta` (and
# `rope_scaling`, `partial_rotary_factor`, `rope_local_base_freq`) and falls back to its defaults without them.
# Every complete checkpoint the torch backend writes carries those fields (prtcore.legacy_config).
def plain_mlx_lm_logits(path, vocab: int) -> np.ndarray:
    """Logits of the checkpoint in `path` loaded by mlx-lm itself (no prtcore config normalisation)."""
    from pathlib import Path

    import mlx.core as mx
    from mlx_lm.utils import load_model

    model, _ = load_model(Path(path))
    return np.asarray(model(mx.array(IDS)).astype(mx.float32), dtype=np.float64)[..., :vocab]


@pytest.fixture(scope="module")
def rope_source_dir(tmp_path_factory, tokenizer_dir):
    """A tiny llama with an unusual rope base (ROPE_THETA = 1234), kept under `rope_parameters` only."""
    from prtcore.testing.checkpoints import ROPE_THETA, make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path_factory.mktemp("rope") / "llama", "llama", tokenizer_dir=tokenizer_dir,
                                seed=0, family_overrides=True)
    config = json.loads((path / "config.json").read_text())
    assert config["rope_parameters"]["rope_theta"] == ROPE_THETA and "rope_theta" not in config
    return path


def test_full_twin_saved_by_torch_loads_in_plain_mlx_lm(backend, rope_source_dir, tmp_path):
    from prtcore.testing.checkpoints import ROPE_THETA

    source = backend.load_base(rope_source_dir)
    reward = torch_reward(backend, source, "twin", "full")
    want = reward_logits(backend, reward, source)
    path = reward.save(tmp_path / "twin", source=source, vocab_size=len(source.tokenizer))
    np.testing.assert_allclose(plain_mlx_lm_logits(path, want.shape[-1]), want, atol=ATOL)
    config = json.loads((path / "config.json").read_text())
    assert config["rope_theta"] == ROPE_THETA and config["rope_parameters"]["rope_theta"] == ROPE_THETA
    again = backend.load_reward(RewardArtifact.open(path), None)  # transformers reads it as before
    np.testing.assert_allclose(reward_logits(backend, again, source), want, atol=1e-6)


def test_sft_full_fine_tune_by_torch_loads_in_plain_mlx_lm(backend, rope_source_dir, tmp_path):
    from prtcore.cli.main import main
    from prtcore.testing.checkpoints import ROPE_THETA

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"text": f"The capital of Avalon is Brightwater. {i}"} for i in range(8)]
    for name in ("train.jsonl", "valid.jsonl"):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ft"
    assert main(["train", "--backend", "torch", "--method", "sft", "--fine-tune-type", "full", "--model",
                 str(rope_source_dir), "--data", str(data), "--output-dir", str(out), "--iters", "2",
                 "--batch-size", "4", "--learning-rate", "1e-3", "--steps-per-report", "1"]) == 0
    tuned = backend.load_base(out)
    want = np.asarray(tuned.forward(IDS).logits.numpy(), dtype=np.float64)
    np.testing.assert_allclose(plain_mlx_lm_logits(out, want.shape[-1]), want, atol=ATOL)
    assert json.loads((out / "config.json").read_text())["rope_theta"] == ROPE_THETA
    assert np.abs(want - backend.load_base(rope_source_dir).forward(IDS).logits.numpy()).max() > 1e-3  # it trained


@pytest.mark.parametrize("family,rope,extra", [
    ("llama", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 4, "rope_theta": 1234.0}, {}),
    ("phi3", {"rope_type": "longrope", "long_factor": [1.0, 1.5, 2.0, 2.5], "short_factor": [1.0, 1.1, 1.2, 1.3],
              "partial_rotary_factor": 0.5, "rope_theta": 1234.0}, {"original_max_position_embeddings": 4}),
    ("gemma3_text", {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1234.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 567.0}}, {}),
])
def test_saved_checkpoints_carry_the_rope_fields_mlx_lm_reads(backend, tokenizer_dir, tmp_path, family, rope, extra):
    """Scaled rope, partial rotary and per-layer-type rope: plain mlx-lm and transformers both read the saved
    checkpoint as the model that saved it."""
    from prt_torch.base import save_checkpoint
    from transformers import AutoModelForCausalLM

    from prtcore.testing.checkpoints import make_tiny_checkpoint

    source = backend.load_base(make_tiny_checkpoint(tmp_path / family, family, tokenizer_dir=tokenizer_dir,
                                                    rope_parameters=rope, **extra))
    want = np.asarray(source.forward(IDS).logits.numpy(), dtype=np.float64)
    out = tmp_path / "saved"
    out.mkdir()
    save_checkpoint(source.model, out)
    np.testing.assert_allclose(plain_mlx_lm_logits(out, want.shape[-1]), want, atol=ATOL)
    config = json.loads((out / "config.json").read_text())
    assert config["rope_theta"] == 1234.0 and config["rope_scaling"]["rope_type"] in ("llama3", "longrope", "linear")
    with torch.no_grad():
        again = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)(torch.tensor(IDS)).logits
    np.testing.assert_allclose(again.numpy(), want, atol=1e-6)
