"""Helpers of the mlx backend tests (a module of its own name, so that it cannot clash with other conftests)."""

from __future__ import annotations

import json

import numpy as np

IDS = [[3, 17, 42, 8, 99, 5, 23, 61, 7, 200]]
OTHER_CORPUS = "Completely different words: zebra quartz fjord xylophone. " * 20 + "0123456789 ()[]{}"


def make_dataset(path, n_train=48, n_valid=16, seed=0):
    rng = np.random.default_rng(seed)
    names = ["Avalon", "Corvia", "Mira", "Dunmere", "Brightwater"]
    rows = []
    for _ in range(n_train + n_valid):
        a, b = rng.choice(names, 2)
        rows.append({"prompt": f"Question: What is the capital of {a}? Answer:", "completion": f" The capital is {b}."})
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:n_train]) + "\n")
    (path / "valid.jsonl").write_text("\n".join(json.dumps(r) for r in rows[n_train:]) + "\n")
    return path


SMALL = {
    "linear": dict(kind="linear"),
    "transformer": dict(kind="transformer", d_model=32, num_layers=2, num_heads=4, ffn_dim=48),
    "lora": dict(kind="twin", fine_tune_type="lora", lora={"rank": 4, "num_layers": 2}),
    "lora_zero_head": dict(kind="twin", fine_tune_type="lora", init="zero_head", lora={"rank": 4, "num_layers": 1, "keys": ["q_proj", "v_proj"]}),
    "full": dict(kind="twin", fine_tune_type="full"),
}


def reward_config(name, **overrides):
    from prtcore import RewardConfig

    return RewardConfig(**{**SMALL[name], **overrides})


def perturb(reward, seed=0, scale=0.05):
    """Give every trainable tensor of a fresh reward random values, so that tests see a non-trivial reward."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    key = mx.random.key(seed)
    updates = []
    for name, value in tree_flatten(reward.module.trainable_parameters()):
        key, sub = mx.random.split(key)
        updates.append((name, value + scale * mx.random.normal(value.shape, key=sub).astype(value.dtype)))
    reward.module.load_weights(updates, strict=False)
    mx.eval(reward.module.parameters())
    return reward
