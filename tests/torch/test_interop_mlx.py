"""Artifacts cross backends: torch writes → mlx reads, and mlx writes (re-saving what it read) → torch reads.

Each side computes the reward logits on its own base model's hidden states; they agree within 1e-4.
"""

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
