"""Artifacts the mlx backend writes give the same reward in the torch backend, and the other way round."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_testutil import IDS, perturb, reward_config
from prtcore import RewardArtifact
from prtcore.errors import BackendError


@pytest.fixture(scope="module")
def torch_backend():
    import prtcore

    try:
        return prtcore.get_backend("torch")
    except (BackendError, ImportError) as e:
        pytest.skip(f"torch backend unavailable: {e}")


def mlx_logits(reward, source):
    hidden = source.forward(mx.array(IDS), hidden=True).hidden if reward.reads_source_hidden else None
    return np.array(reward.forward(mx.array(IDS), source_hidden=hidden))


def torch_logits(backend, reward, source):
    ids = backend.asarray(IDS)
    hidden = source.forward(ids, hidden=True).hidden if reward.reads_source_hidden else None
    return np.asarray(backend.to_numpy(reward.forward(ids, source_hidden=hidden)), dtype=np.float32)


@pytest.mark.parametrize("name,overrides", [
    ("linear", {}), ("transformer", {}), ("lora", {}), ("lora_zero_head", {}), ("full", {}), ("full", {"init": "zero_head"}),
])
def test_mlx_artifact_in_torch(backend, torch_backend, ckpts, tmp_path, name, overrides):
    source = backend.load_base(ckpts["source"])
    reward = perturb(backend.create_reward(reward_config(name, **overrides), source, seed=1), seed=2)
    reward.save(tmp_path / "r", source=source, vocab_size=reward.shared_vocab)
    t_source = torch_backend.load_base(ckpts["source"])
    t_reward = torch_backend.load_reward(RewardArtifact.open(tmp_path / "r"), t_source)
    np.testing.assert_allclose(torch_logits(torch_backend, t_reward, t_source), mlx_logits(reward, source), atol=1e-4)


@pytest.mark.parametrize("name", ["lora", "full"])
def test_torch_artifact_in_mlx(backend, torch_backend, ckpts, tmp_path, name):
    t_source = torch_backend.load_base(ckpts["source"])
    t_reward = torch_backend.create_reward(reward_config(name), t_source, seed=1)
    t_reward.save(tmp_path / "r", source=t_source, vocab_size=384)
    want = torch_logits(torch_backend, t_reward, t_source)
    source = backend.load_base(ckpts["source"])
    reward = backend.load_reward(RewardArtifact.open(tmp_path / "r"), source)
    np.testing.assert_allclose(mlx_logits(reward, source), want, atol=1e-4)
