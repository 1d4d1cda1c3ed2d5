"""make_tiny_checkpoint without torch (the mlx extra alone): the same config.json as with torch, weights drawn by
NumPy in mlx-lm's layout, which the mlx backend loads. Here make_tiny_checkpoint is told torch is missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from prtcore.testing import checkpoints
from prtcore.testing.checkpoints import make_tiny_checkpoint


def tensors(path) -> dict[str, np.ndarray]:
    with safe_open(str(path / "model.safetensors"), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture
def without_torch(monkeypatch):
    monkeypatch.setattr(checkpoints, "torch_installed", lambda: False)


def test_llama_without_torch_matches_the_torch_layout_and_loads_on_mlx(backend, ckpts, tmp_path, without_torch):
    made = make_tiny_checkpoint(tmp_path / "numpy", "llama", tokenizer_dir=ckpts["tok"], seed=0, init_std=0.05)
    reference = ckpts["source"]  # the same settings, written through torch
    assert json.loads((made / "config.json").read_text()) == {
        **json.loads((reference / "config.json").read_text()), "initializer_range": 0.05}
    assert (made / "generation_config.json").read_text() == (reference / "generation_config.json").read_text()
    drawn, torch_made = tensors(made), tensors(reference)
    assert {k: v.shape for k, v in drawn.items()} == {k: v.shape for k, v in torch_made.items()}
    assert all(v.dtype == np.float32 for v in drawn.values())
    matrices = np.concatenate([v.ravel() for v in drawn.values() if v.ndim == 2])
    norms = np.concatenate([v for k, v in drawn.items() if "norm" in k])
    assert abs(matrices.std() - 0.05) < 0.005 and abs(norms.mean() - 1.0) < 0.05 and norms.std() > 0.05
    again = tensors(make_tiny_checkpoint(tmp_path / "again", "llama", tokenizer_dir=ckpts["tok"], seed=0, init_std=0.05))
    assert all(np.array_equal(v, again[k]) for k, v in drawn.items())  # seeded
    base = backend.load_base(made)
    assert np.isfinite(backend.to_numpy(base.forward(backend.asarray([[1, 2, 3, 4]])).logits)).all()


def test_a_mixture_of_experts_family_without_torch_loads_on_mlx(backend, ckpts, tmp_path, without_torch):
    made = make_tiny_checkpoint(tmp_path / "moe", "qwen3_moe", tokenizer_dir=ckpts["tok"], seed=0, family_overrides=True)
    assert any(".switch_mlp." in name for name in tensors(made))  # the experts stacked, as mlx-lm keeps them
    base = backend.load_base(made)
    assert np.isfinite(backend.to_numpy(base.forward(backend.asarray([[1, 2, 3]])).logits)).all()
