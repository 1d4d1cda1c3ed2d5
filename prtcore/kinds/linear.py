"""The `linear` reward kind (PRT1): a linear head over the frozen source's last hidden states.

    logits = hidden @ head.weightᵀ            head.weight (V, H), zero-initialised

Every backend computes exactly this on a tensor of exactly this name and shape, so one artifact means the same
reward everywhere; `reference` is the executable specification.
"""

from __future__ import annotations

import numpy as np

from . import RewardKind


def tensor_shapes(config, hidden_size: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
    return {"head.weight": (vocab_size, hidden_size)}


def reference(tensors: dict, hidden, config=None) -> np.ndarray:
    """Reward logits (B, T, V), float64, for source hidden states (B, T, H)."""
    return np.asarray(hidden, dtype=np.float64) @ np.asarray(tensors["head.weight"], dtype=np.float64).T


LINEAR = RewardKind(
    name="linear",
    description="a linear head over the frozen source model's last hidden states",
    tensor_shapes=tensor_shapes,
    reference=reference,
)
