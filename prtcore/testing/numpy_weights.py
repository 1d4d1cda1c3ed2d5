"""Random weights of a tiny checkpoint without torch: the tensors mlx-lm's model of the config has, drawn by NumPy.

    save_numpy_weights(path, seed=0, init_std=0.1)   # path holds config.json; writes model.safetensors

The tensor names are mlx-lm's (for most families the hub's; mixture-of-experts families keep their experts
stacked), so the mlx backend reads the checkpoint; an install without torch has no other backend to read it.
The values follow transformers' init as prtcore.testing.checkpoints uses it: N(0, init_std²) matrices, zero
biases, norm scales 1 + N(0, 0.1²).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def save_numpy_weights(path, *, seed: int, init_std: float) -> Path:
    """Write `path`/model.safetensors for the config.json in `path` (requires mlx and mlx-lm)."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model

    from ..artifacts import save_numpy_tensors
    from ..legacy_config import legacy_fields

    path = Path(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    # Built lazily and never evaluated: only the names and shapes of its parameters are read.
    model, _ = load_model(path, lazy=True, strict=False, model_config=legacy_fields(config))
    rng = np.random.default_rng(seed)
    weights = {}
    for name, value in tree_flatten(model.parameters()):
        shape = tuple(value.shape)
        if "norm" in name and len(shape) == 1:
            weights[name] = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif len(shape) >= 2:
            weights[name] = init_std * rng.standard_normal(shape, dtype=np.float32)
        else:
            weights[name] = np.zeros(shape, dtype=np.float32)
    file = path / "model.safetensors"
    save_numpy_tensors(file, weights, metadata={"format": "mlx"})
    return file
